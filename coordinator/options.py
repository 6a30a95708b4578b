"""One options type for a run: `sila run`, `Lake.run`, `run_stage` and every worker read it.

`RunOptions` is what a user chooses; `WorkerOptions` adds what the driver assigns to each worker
(job id, index, settings identity). Both are plain dataclasses, picklable for worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from sila.errors import SilaError


@dataclass
class RunOptions:
    """How to run a stage. Every field has a default that fits a laptop.

    Example::

        lake.run("thumbnail", RunOptions(where="media_kind = 'video'", workers=4))
        lake.run("thumbnail", where="media_kind = 'video'", workers=4)  # the same
    """

    executor: str = "auto"  # auto | inline | processes | ray
    workers: int = 1
    address: str | None = None  # Ray cluster
    where: str | None = None  # run-time selection: matching rows only, fragments stay partial
    recompute: bool = False
    retry_errors: bool = False
    settings: dict[str, Any] | list[str] | None = None  # stage settings (dict or KEY=VALUE list)
    recipe: str | None = None
    progress: bool = False
    ttl: float = 60.0  # lease time-to-live, seconds
    heartbeat: float | None = None  # default ttl / 4
    commit_batch: int = 64
    commit_window_s: float = 2.0
    segment_rows: int | None = None  # default: the stage's own
    endpoint_url: str | None = None
    allow_random_weights: bool = False
    poll_s: float = 1.0
    # Checkpoint a segment only once this much compute is at stake since the last durable point:
    # cheap stages then pay nothing, expensive ones checkpoint every segment.
    checkpoint_min_s: float = 1.0

    @classmethod
    def build(cls, base: RunOptions | None = None, **overrides: Any) -> RunOptions:
        """`base` (or the defaults) with `overrides`; unknown names are refused by name."""
        known = {f.name for f in fields(RunOptions)}
        unknown = set(overrides) - known
        if unknown:
            raise SilaError(f"unknown run option(s) {sorted(unknown)}; known: {sorted(known)}")
        values = {f.name: getattr(base, f.name) for f in fields(RunOptions)} if base else {}
        values.update(overrides)
        return cls(**values)


@dataclass
class WorkerOptions(RunOptions):
    """A run's options as one fragment worker sees them."""

    job: str = ""
    worker_index: int = 0
    # What makes two computations the same work (stage version, effective settings, model):
    # recorded per fragment and in checkpoints, so other settings never mix with these.
    identity: str = ""
    # The stage's columns are to be reset (new version / --recompute): done lazily, after the
    # first good segment, so a broken new version loses nothing.
    reset: bool = False
    job_log: str | None = None  # store key of the job's log file (tracebacks of row failures)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, run: RunOptions, **assigned: Any) -> WorkerOptions:
        return cls(**{f.name: getattr(run, f.name) for f in fields(RunOptions)}, **assigned)
