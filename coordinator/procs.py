"""`--workers N` without Ray: N fragment workers as fresh Python processes.

Each worker is `python -m sila.coordinator.procs` (exec, never fork after Lance is loaded, and
never re-importing the user's `__main__` as multiprocessing's spawn would). It reads its job
from stdin and reports JSON lines on stdout. A worker exits when its parent dies.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import traceback

from sila.errors import SilaError, StageFailed


def run_processes(lake, portable_spec, conf: dict, opts, workers: int, report) -> None:
    from dataclasses import replace

    env = {**os.environ, "LANCE_LOG": os.environ.get("LANCE_LOG", "error")}
    procs: list[subprocess.Popen] = []
    events: queue.Queue = queue.Queue()
    for i in range(workers):
        payload = pickle.dumps(
            (
                lake.uri,
                lake.storage_options,
                portable_spec,
                conf,
                replace(opts, worker_index=i, workers=workers),
                os.getpid(),
            )
        )
        p = subprocess.Popen(
            [sys.executable, "-m", "sila.coordinator.procs"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        p.stdin.write(base64.b64encode(payload).decode() + "\n")
        p.stdin.close()
        threading.Thread(target=_pump, args=(p, events), daemon=True).start()
        procs.append(p)
    errors: list[str] = []
    failed: list[
        tuple[str | None, str]
    ] = []  # SilaErrors (a setup failure, a broken stage): the stage's own words
    ended = 0
    try:
        while ended < workers:
            kind, pid, payload = events.get()
            if kind == "event":
                report(payload)
            elif kind == "failed":
                failed.append(payload)
                break  # the job has failed: stop the other workers now
            elif kind == "error":
                errors.append(payload)
            elif kind == "eof":
                ended += 1
                p = next(p for p in procs if p.pid == pid)
                if p.wait() != 0 and not any(str(pid) in e for e in errors):
                    errors.append(f"worker pid {pid} exited with code {p.returncode}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    if failed:
        import sila.errors

        kind, message = failed[0]
        cls = getattr(sila.errors, kind or "", None)
        raise (cls if isinstance(cls, type) and issubclass(cls, SilaError) else StageFailed)(
            message
        )
    if errors:
        raise SilaError(f"{len(errors)} worker(s) failed; first: {errors[0].strip()}")


def _pump(p: subprocess.Popen, events: queue.Queue) -> None:
    for line in p.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "event" in msg:
            events.put(("event", p.pid, msg["event"]))
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

    lake_uri, storage, spec, conf, opts, parent = pickle.loads(
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
        FragmentWorker(
            Lake(lake_uri, storage_options=storage), cls(**conf), opts, lambda e: send({"event": e})
        ).run()
        return 0
    except SilaError as e:  # its message names the problem and the fix: no traceback
        send({"failed": str(e), "kind": type(e).__name__})
        return 1
    except BaseException as e:  # noqa: BLE001 - reported to the driver, which fails the job
        send({"error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"})
        return 1


if __name__ == "__main__":
    sys.exit(main())
