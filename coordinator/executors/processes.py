"""`--workers N` without Ray: N fragment workers as fresh Python processes.

Each worker is `python -m sila.coordinator.executors.processes` (exec, never fork after Lance is loaded, and
never re-importing the user's `__main__` as multiprocessing's spawn would). It reads its job
from stdin and reports JSON lines on stdout. A worker exits when its parent dies.

A worker that crashes while computing (a segfault, `os._exit`) is replaced; its replacement
computes the rows it was on one at a time, and a row that crashes a worker alone too becomes
a crash error for every later worker (the same contract as the Ray executor).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

from sila.errors import SilaError, StageFailed

log = logging.getLogger(__name__)

MAX_RESPAWNS = 16  # crashed workers replaced per job; past that the job fails


@dataclass
class Crashes:
    """What crashed workers were computing: row-address ranges to retry row by row, and rows
    that crashed a worker alone (crash errors from then on)."""

    suspects: list[tuple[int, int]] = field(default_factory=list)
    known: set[int] = field(default_factory=set)

    def note(self, guard: list) -> None:
        if guard[0] == "segment":
            self.suspects.append((guard[1], guard[2]))
        elif guard[0] == "row":
            self.known.add(guard[1])


def run_processes(lake, portable_spec, conf: dict, opts, workers: int, report) -> None:
    """Run `workers` fragment workers as fresh processes until every one has ended; a worker
    that crashed while computing rows is replaced (up to MAX_RESPAWNS), its leases released."""
    pool = _ProcessPool(lake, portable_spec, conf, opts, workers)
    for i in range(workers):
        pool.spawn(i)
    try:
        pool.wait(report)
    finally:
        pool.stop()
    pool.raise_failure()


class _ProcessPool:
    """The worker processes of one job and what the driver knows about each (by pid)."""

    def __init__(self, lake, portable_spec, conf: dict, opts, workers: int) -> None:
        self.lake, self.spec, self.conf, self.opts, self.workers = (
            lake, portable_spec, conf, opts, workers,
        )  # fmt: skip
        self.env = {**os.environ, "LANCE_LOG": os.environ.get("LANCE_LOG", "error")}
        self.procs: list[subprocess.Popen] = []
        self.events: queue.Queue = queue.Queue()
        self.crashes = Crashes()
        self.index: dict[int, int] = {}  # pid -> worker index
        self.guards: dict[int, list | None] = {}  # pid -> what it computes right now
        self.owners: dict[int, str] = {}  # pid -> its lease owner id
        self.respawns = 0
        self.errors: list[str] = []
        # SilaErrors (a setup failure, a broken stage): the stage's own words
        self.failed: list[tuple[str | None, str]] = []

    def spawn(self, i: int) -> None:
        """Start worker `i` (a fresh interpreter: never fork after Lance is initialised)."""
        from dataclasses import replace

        payload = pickle.dumps(
            (
                self.lake.uri,
                self.lake.storage_options,
                self.spec,
                self.conf,
                replace(self.opts, worker_index=i, workers=self.workers),
                os.getpid(),
                self.crashes,
            )
        )
        p = subprocess.Popen(
            [sys.executable, "-m", "sila.coordinator.executors.processes"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            text=True,
        )
        p.stdin.write(base64.b64encode(payload).decode() + "\n")
        p.stdin.close()
        threading.Thread(target=_pump, args=(p, self.events), daemon=True).start()
        self.procs.append(p)
        self.index[p.pid] = i

    def wait(self, report) -> None:
        """Route the workers' events until all have ended or one reports a failed job."""
        ended = 0
        while ended < len(self.procs):
            kind, pid, payload = self.events.get()
            if kind == "event":
                report(payload)
            elif kind == "guard":
                self.guards[pid] = payload
            elif kind == "owner":
                self.owners[pid] = payload
            elif kind == "failed":
                self.failed.append(payload)
                return  # the job has failed: stop the other workers now
            elif kind == "error":
                self.errors.append(payload)
            elif kind == "eof":
                ended += 1
                self._ended(pid)

    def _ended(self, pid: int) -> None:
        p = next(p for p in self.procs if p.pid == pid)
        if p.wait() == 0 or any(str(pid) in e for e in self.errors):
            return
        guard = self.guards.get(pid)
        if guard and self.respawns < MAX_RESPAWNS:  # crashed while computing rows
            self.crashes.note(guard)
            self.respawns += 1
            log.warning(
                "worker pid %d crashed (exit code %d) computing %s; replacing it",
                pid,
                p.returncode,
                guard,
            )
            if pid in self.owners:  # its fragments need not wait out the lease TTL
                from sila.coordinator.leases import LeaseStore

                LeaseStore(self.lake.store).release_dead(self.owners[pid])
            self.spawn(self.index[pid])
            return
        self.errors.append(
            f"worker pid {pid} exited with code {p.returncode}"
            + (
                f" computing {guard}; {self.respawns} crashed workers were replaced "
                "already: the stage keeps crashing its worker processes"
                if guard
                else ""
            )
        )

    def stop(self) -> None:
        """Terminate what still runs (a failed job, an interrupted driver); no leftovers."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def raise_failure(self) -> None:
        """Raise the job's failure: the stage's own SilaError first, else the workers' errors."""
        if self.failed:
            import sila.errors

            kind, message = self.failed[0]
            cls = getattr(sila.errors, kind or "", None)
            ok = isinstance(cls, type) and issubclass(cls, SilaError)
            raise (cls if ok else StageFailed)(message)
        if self.errors:
            raise SilaError(f"{len(self.errors)} worker(s) failed; first: {self.errors[0].strip()}")


def _pump(p: subprocess.Popen, events: queue.Queue) -> None:
    for line in p.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "event" in msg:
            events.put(("event", p.pid, msg["event"]))
        elif "owner" in msg:
            events.put(("owner", p.pid, msg["owner"]))
        elif "guard" in msg:
            events.put(("guard", p.pid, msg["guard"]))
        elif "failed" in msg:
            events.put(("failed", p.pid, (msg.get("kind"), msg["failed"])))
        elif "error" in msg:
            events.put(("error", p.pid, f"worker pid {p.pid}: {msg['error']}"))
    events.put(("eof", p.pid, None))


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:  # the driver died: stop; our leases expire and others resume
            os._exit(3)


def main() -> int:
    from sila.coordinator.worker import FragmentWorker

    from sila.lake import Lake
    from sila.registry import from_portable

    lake_uri, storage, spec, conf, opts, parent, crashes = pickle.loads(
        base64.b64decode(sys.stdin.readline())
    )
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    out = sys.stdout
    lock = threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            out.write(json.dumps(msg) + "\n")
            out.flush()

    try:
        cls = from_portable(spec)
        worker = FragmentWorker(
            Lake(lake_uri, storage_options=storage), cls(**conf), opts, lambda e: send({"event": e})
        )
        worker.runner = GuardedRunner(worker.runner, cls, crashes, send)
        send({"owner": worker.owner})
        worker.run()
        return 0
    except SilaError as e:  # its message names the problem and the fix: no traceback
        send({"failed": str(e), "kind": type(e).__name__})
        return 1
    except BaseException as e:  # noqa: BLE001 - reported to the driver, which fails the job
        send({"error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"})
        return 1


class GuardedRunner:
    """Wraps a worker's runner: tells the driver which rows it computes (so a crash can be
    narrowed down), runs suspect rows one at a time and never runs a known crasher again."""

    def __init__(self, inner, stage_cls, crashes: Crashes, send) -> None:
        self.inner, self.stage_cls, self.crashes, self.send = inner, stage_cls, crashes, send

    def start(self) -> None:
        self.inner.start()

    def close(self) -> None:
        self.inner.close()

    def __call__(self, plan, part):
        from sila.coordinator.inputs import ADDR
        from sila.coordinator.steps import crashed_rows, merge_results

        addrs = part.column(ADDR).to_pylist()
        if not addrs:
            return self.inner(plan, part)
        lo, hi = min(addrs), max(addrs)
        suspect = any(a <= hi and lo <= b for a, b in self.crashes.suspects)
        if not suspect and not self.crashes.known.intersection(addrs):
            self.send({"guard": ["segment", lo, hi]})
            try:
                return self.inner(plan, part)
            finally:
                self.send({"guard": None})
        parts = []
        for i, addr in enumerate(addrs):  # a crash narrowed to its row, as on Ray
            if addr in self.crashes.known:
                msg = "worker crashed on this row, alone too (its process exited)"
                parts.append(crashed_rows(self.stage_cls, 1, msg))
                continue
            self.send({"guard": ["row", addr]})
            parts.append(self.inner(plan, part.slice(i, 1)))
        self.send({"guard": None})
        return merge_results(self.stage_cls, parts)


if __name__ == "__main__":
    sys.exit(main())
