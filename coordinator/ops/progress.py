"""A rich progress bar over a job's fragments (disabled for --json and library use)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressView:
    def __init__(self, job, enabled: bool) -> None:
        self.job = job
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> ProgressView:
        if self.enabled:
            self._progress = Progress(
                TextColumn(f"[bold]{self.job.stage}[/] on {self.job.table}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "fragments · {task.fields[rows]} rows · {task.fields[errors]} row errors"
                ),
                TimeElapsedColumn(),
                TextColumn("{task.fields[pools]}"),
                console=Console(file=sys.stderr),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "run", total=self.job.progress.fragments_total or None, rows=0, errors=0, pools=""
            )
        return self

    def update(self, event: dict) -> None:
        if self._progress is None:
            return
        p = self.job.progress
        pools = " ".join(  # Ray: per pool rows/s, queue depth, busy fraction
            f"{name}[{m['actors']}]: {m['rows_per_s']:.0f}/s q{m['queue_depth']} {m['busy_fraction']:.0%}"
            for name, m in (self.job.metrics.get("pools") or {}).items()
        )
        self._progress.update(
            self._task,
            completed=p.fragments_done + p.fragments_skipped,
            rows=p.rows,
            errors=p.row_errors,
            pools=pools,
        )

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
