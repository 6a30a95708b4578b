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
    lost_leases: int = 0  # fragments another worker took over before this job committed them

    def add(self, other: dict) -> None:
        for k, v in other.items():
            if k != "fragments_total" and hasattr(self, k):
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

    def to_dict(self) -> dict:
        return asdict(self)

    def note_error(self, msg: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(msg)


class JobLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, rec: JobRecord) -> None:
        rec.heartbeat_at = time.time()
        self.store.put(f"jobs/{rec.job}.json", json.dumps(rec.to_dict(), indent=1).encode())

    def all(self) -> list[dict]:
        out = []
        for e in self.store.list("jobs"):
            raw = self.store.get(e.key)
            if raw:
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue
        return sorted(out, key=lambda d: d.get("started_at", 0))
