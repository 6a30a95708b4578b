"""One model server as a subprocess: launch, health polling, stop without leftovers.

A detached guard process stops the server's process group if the owner (e.g. a Ray actor) dies
without cleaning up, even by SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from sila.errors import SilaError

log = logging.getLogger(__name__)

ACTOR_PREFIX = "sila-endpoint-"


class EndpointError(SilaError):
    """A model endpoint could not be started, became unhealthy, or answered with an error."""


@dataclass(frozen=True)
class EndpointSpec:
    """How to launch one model server per node. `{port}` in `command` is replaced by the port."""

    command: list[str]
    name: str = "default"
    port: int | None = None  # None: a free port on each node
    health_path: str = "/health"
    gpus: float = 0
    startup_timeout_s: float = 600
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.command:
            raise EndpointError(f"endpoint '{self.name}': `command` is empty")
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise EndpointError(f"endpoint name {self.name!r}: use letters, digits, '-', '_', '.'")

    def actor_name(self, node_id: str) -> str:
        return f"{ACTOR_PREFIX}{self.name}-{node_id[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()
    except OSError:
        return "(no log)"


# Runs detached (double fork) so that it outlives the process that owns the server, even a
# SIGKILLed Ray worker: when that owner dies, it stops the server's whole process group.
_GUARD = """
import os, signal, sys, time
owner, pgid, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
child = os.fork()
if child:
    print(child, flush=True)
    os._exit(0)
os.dup2(os.open(os.devnull, os.O_RDWR), 1)  # let the launcher see EOF on the pipe
def alive(pid, group=False):
    try:
        os.killpg(pid, 0) if group else os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
while alive(pgid, group=True):
    if not alive(owner):
        os.killpg(pgid, signal.SIGTERM)
        end = time.time() + grace
        while alive(pgid, group=True) and time.time() < end:
            time.sleep(0.1)
        if alive(pgid, group=True):
            os.killpg(pgid, signal.SIGKILL)
        break
    time.sleep(0.25)
"""


class EndpointProcess:
    """One model server as a subprocess in its own process group, logging to `log_dir`.

    The port is chosen once (spec.port or a free one), so the URL stays valid across restarts.
    """

    def __init__(self, spec: EndpointSpec, log_dir: str | Path, stop_grace_s: float = 10.0) -> None:
        self.spec = spec
        self.port = spec.port or free_port()
        self.stop_grace_s = stop_grace_s
        self.log_path = Path(log_dir) / f"endpoint-{spec.name}-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.guard_pid: int | None = None
        self.starts = 0
        self._http = requests.Session()
        self._http.trust_env = False  # a loopback health check must never go through a proxy

    @property
    def url(self) -> str:
        """The OpenAI base URL, e.g. http://127.0.0.1:8000/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.spec.health_path}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        return [arg.replace("{port}", str(self.port)) for arg in self.spec.command]

    def start(self) -> None:
        """Launch the server (no wait: see `wait_healthy`)."""
        if self.alive():
            return
        if _listening(self.port):  # else /health could answer for someone else's server
            raise EndpointError(
                f"endpoint '{self.spec.name}': port {self.port} is already in use on this node; "
                "stop whatever listens there or choose another port"
            )
        cmd = self.command()
        self.starts += 1
        with open(self.log_path, "a") as logf:
            logf.write(f"\n--- sila: start #{self.starts} at {time.ctime()}: {cmd}\n")
            logf.flush()
            try:
                self.proc = subprocess.Popen(
                    cmd,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **self.spec.env},
                    start_new_session=True,
                )
            except OSError as e:
                raise EndpointError(
                    f"endpoint '{self.spec.name}': cannot run {cmd[0]!r}: {e}; "
                    "install it on every node or fix the endpoint command"
                ) from e
        guard = subprocess.run(  # prints the pid of its detached child, which keeps watching
            [
                sys.executable,
                "-c",
                _GUARD,
                str(os.getpid()),
                str(self.proc.pid),
                str(self.stop_grace_s),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
            check=False,
        )
        self.guard_pid = int(guard.stdout) if guard.stdout.strip().isdigit() else None
        if self.guard_pid is None:
            log.warning(
                "endpoint '%s': no guard process: the server may outlive a killed owner",
                self.spec.name,
            )
        log.info(
            "endpoint '%s' started pid %s on port %s (log %s)",
            self.spec.name,
            self.proc.pid,
            self.port,
            self.log_path,
        )

    def health(self, timeout_s: float = 2.0) -> bool:
        try:
            return self._http.get(self.health_url, timeout=timeout_s).status_code == 200
        except requests.RequestException:
            return False

    def wait_healthy(
        self, timeout_s: float | None = None, cancel: threading.Event | None = None
    ) -> None:
        """Poll the health URL until it answers 200; fail naming the log if the server exits
        or the timeout passes (or `cancel` is set)."""
        timeout_s = self.spec.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            if self.proc is None or (cancel is not None and cancel.is_set()):
                raise EndpointError(f"endpoint '{self.spec.name}' is not running (stopped)")
            code = self.proc.poll()
            if code is not None:
                raise EndpointError(
                    f"endpoint '{self.spec.name}' exited with code {code} before becoming "
                    f"healthy; last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            if self.health():
                return
            if time.monotonic() > deadline:
                raise EndpointError(
                    f"endpoint '{self.spec.name}' not healthy at {self.health_url} after "
                    f"{timeout_s:g} s (raise startup_timeout_s if the model loads slowly); "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self, cancel: threading.Event | None = None) -> None:
        self.stop()
        self.start()
        self.wait_healthy(cancel=cancel)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after the grace period."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        try:  # descendants that left the group (setsid) are still found through their parents
            strays = {c.pid for c in psutil.Process(pgid).children(recursive=True)}
        except psutil.Error:
            strays = set()
        _signal(pgid, strays, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the leader so that it does not count as alive
            if not _running(pgid, strays):
                break
            time.sleep(0.05)
        else:
            log.warning(
                "endpoint '%s' outlived SIGTERM by %gs: SIGKILL", self.spec.name, self.stop_grace_s
            )
            _signal(pgid, strays, signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        if self.guard_pid is not None:
            try:  # only if that pid is still our guard, not a process that reused it
                if psutil.Process(self.guard_pid).cmdline()[1:3] == ["-c", _GUARD]:
                    os.kill(self.guard_pid, signal.SIGKILL)
            except (psutil.Error, OSError):
                pass
            self.guard_pid = None


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _signal(pgid: int | None, pids: set[int], sig: int) -> None:
    for target, kill in [(pgid, os.killpg)] + [(pid, os.kill) for pid in pids]:
        try:
            if target is not None:
                kill(target, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _running(pgid: int, pids: set[int]) -> bool:
    """Whether a non-zombie process is in group `pgid` or among `pids`."""
    for p in psutil.process_iter(["status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if p.pid in pids or os.getpgid(p.pid) == pgid:
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def load_endpoint_toml(path: str | Path) -> EndpointSpec:
    """An EndpointSpec from a launch file like `infra/vllm/endpoint.toml`: `[endpoint]` holds
    the spec's fields; `[vllm]` (model + `vllm serve` options, `a_b = x` -> `--a-b x`, `true` ->
    a bare flag) builds the command when `[endpoint]` gives no `command`."""
    import tomllib

    try:
        conf = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise EndpointError(f"cannot read endpoint settings {path}: {e}") from e
    ep = dict(conf.get("endpoint", {}))
    vllm = dict(conf.get("vllm", {}))
    if "command" not in ep:
        if "model" not in vllm:
            raise EndpointError(f"{path}: give [endpoint] command = [...] or [vllm] model = '...'")
        cmd = ["vllm", "serve", str(vllm.pop("model")), "--port", "{port}"]
        for key, value in vllm.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                cmd.append(flag)
            elif value is not False and value is not None:
                cmd += [flag, value if isinstance(value, str) else str(value)]
        ep["command"] = cmd
        ep.setdefault("gpus", vllm.get("tensor_parallel_size", 1))
    try:
        return EndpointSpec(**ep)
    except TypeError as e:
        raise EndpointError(f"{path}: bad [endpoint] settings: {e}") from e
