"""Structured job records at `_sila/jobs/<job-id>.json`: state, progress, errors, heartbeat."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field

from sila.coordinator.store import Store

MAX_ERRORS = 50


SECRET_WORDS = ("secret", "token", "password", "key", "credential", "sas", "signature")


def redact(argv: list[str]) -> list[str]:
    """Job records and logs never carry secrets: KEY=VALUE args with a secret-looking key are masked."""
    out = []
    for a in argv:
        low = a.lower()
        hits = [low.find(w) for w in SECRET_WORDS if w in low]
        eq = a.find("=", min(hits)) if hits else -1
        out.append(a[: eq + 1] + "***" if eq >= 0 else a)
    return out


def new_job_id(stage: str) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{stage}-{uuid.uuid4().hex[:6]}"


@dataclass
class Progress:
    fragments_total: int = 0
    fragments_done: int = 0
    fragments_skipped: int = 0  # committed by someone else first
    rows: int = 0
    row_errors: int = 0
    segments_computed: int = 0
    segments_reused: int = 0
    commits: int = 0
    children: int = 0
    fragments_deferred: int = 0  # waiting for an upstream stage (set at the start)
    checkpoints_discarded: int = 0  # found, but saved for other work: recomputed
    row_failures: int = 0  # unexpected exceptions (tracebacks in the job's log file)
    lost_leases: int = 0  # fragments another worker took over before this job committed them

    def add(self, other: dict) -> None:
        for k, v in other.items():
            if k not in ("fragments_total", "fragments_deferred") and hasattr(self, k):
                setattr(self, k, getattr(self, k) + v)


@dataclass
class JobRecord:
    job: str
    stage: str
    table: str
    stage_version: str
    executor: str
    workers: int
    state: str = "running"  # running | succeeded | failed | interrupted
    started_at: float = field(default_factory=time.time)
    heartbeat_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    argv: list[str] = field(default_factory=lambda: redact(sys.argv))
    progress: Progress = field(default_factory=Progress)
    errors: list[str] = field(default_factory=list)
    message: str = ""
    metrics: dict = field(default_factory=dict)
    identity: str = ""  # stage version + effective settings + model, hashed (state.py)
    settings: dict = field(default_factory=dict)
    where: str | None = None  # the run-time selection, if any
    log: str | None = None  # the job's log file: tracebacks of unexpected row failures

    def to_dict(self) -> dict:
        return asdict(self)

    def note_error(self, msg: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(msg)


class JobFailureLog:
    """`_sila/jobs/<job>.log`: one block per unexpected row failure (row id, source, traceback).
    Rewritten whole (object stores cannot append); bounded by the watcher's detail limit."""

    def __init__(self, store: Store, job: str) -> None:
        self.store, self.key = store, f"jobs/{job}.log"
        self.blocks: list[str] = []
        self._written = 0

    def uri(self, lake) -> str:
        return f"{lake.uri}/_sila/{self.key}"

    def add(self, failure: dict) -> None:
        self.blocks.append(
            f"== fragment {failure.get('fragment')} row {failure.get('row_id')!r}"
            + (f" source {failure['source']}" if failure.get("source") else "")
            + f"\n{failure.get('error')}\n{(failure.get('traceback') or '').rstrip()}\n"
        )

    def write(self) -> None:
        if len(self.blocks) != self._written:
            self.store.put(self.key, "\n".join(self.blocks).encode())
            self._written = len(self.blocks)


class JobLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, rec: JobRecord) -> None:
        rec.heartbeat_at = time.time()
        self.store.put(f"jobs/{rec.job}.json", json.dumps(rec.to_dict(), indent=1).encode())

    def all(self) -> list[dict]:
        out = []
        for e in self.store.list("jobs"):
            if not e.key.endswith(".json"):
                continue
            raw = self.store.get(e.key)
            if raw:
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue
        return sorted(out, key=lambda d: d.get("started_at", 0))
