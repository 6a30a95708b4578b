"""Honest failures: is the stage broken, and what went wrong on which of the user's rows.

"Broken" is judged over the job's first rows, never one segment: the job stops when every one
of its first 64 rows (or of its first 3 segments, whichever is more) failed with unexpected
errors. Until that verdict, finished fragments are held back from the committer, so a broken
stage commits nothing. Each unexpected failure is logged at WARNING with the row's id and source
path, and sent to the driver for the job's log file (`_sila/jobs/<job>.log`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import lance
import pyarrow as pa
from sila.coordinator.inputs import ADDR
from sila.coordinator.steps import SegmentResult

from sila.errors import StageFailed

log = logging.getLogger("sila.coordinator.worker")

WINDOW_ROWS, WINDOW_SEGMENTS = 64, 3
FULL_TRACEBACKS = 20  # then one line each: a broken corpus must not flood the console
DETAILED = 200  # failures looked up (id, source path) and sent to the job log


class FailureWatch:
    def __init__(
        self,
        stage_name: str,
        error_column: str,
        report: Callable[[dict], None],
        source_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.name, self.error_column, self.report = stage_name, error_column, report
        self.source_of = source_of  # a clip's source id -> the user's own path
        self.rows = self.segments = self.unexpected = 0
        self.verdict: bool | None = None  # True: works; None: still judging
        self.logged = 0
        self.example = ""
        self._lock = threading.Lock()

    @property
    def judging(self) -> bool:
        return self.verdict is None

    def observe(
        self, res: SegmentResult, part: pa.RecordBatch, ds: lance.LanceDataset, fragment: int
    ) -> None:
        n = res.outputs.num_rows
        if res.unexpected_failures:
            self._describe(res, part, ds, fragment)
        with self._lock:
            self.rows += n
            self.segments += 1
            self.unexpected += res.unexpected_failures
            if self.verdict is not None:
                return
            if res.unexpected_failures < n:
                self.verdict = True
            elif self.rows >= WINDOW_ROWS and self.segments >= WINDOW_SEGMENTS:
                raise self.failure()

    def failure(self) -> StageFailed:
        return StageFailed(
            f"stage '{self.name}' failed with unexpected errors on every one of the first "
            f"{self.rows} rows ({self.segments} segment(s)) it processed, e.g. {self.example}. "
            "This looks like a bug in the stage, not bad data: nothing was committed; the "
            "tracebacks are in the job's log (see `sila status`); fix it and run again."
        )

    def finish(self) -> None:
        """End of the worker's work: a job whose every row failed unexpectedly is broken, even if
        it had fewer rows than the window."""
        if self.verdict is None and self.rows and self.unexpected == self.rows:
            raise self.failure()
        self.verdict = True

    def _describe(
        self, res: SegmentResult, part: pa.RecordBatch, ds: lance.LanceDataset, fragment: int
    ) -> None:
        errors = res.outputs.column(self.error_column)
        for i, tb in res.failures or [(None, "")]:
            if i is None:  # a runner without tracebacks (e.g. crashed worker): the first row
                i = 0
            msg = errors[i].as_py() if i < len(errors) else "?"
            self.example = self.example or msg
            with self._lock:
                self.logged += 1
                k = self.logged
            if k > DETAILED:
                continue
            addr = part.column(ADDR)[i].as_py() if ADDR in part.schema.names else None
            row_id, source = _row_identity(ds, addr, self.source_of)
            where = f"row {row_id!r}" + (f" ({source})" if source else "")
            if k <= FULL_TRACEBACKS:
                log.warning("stage %s: %s failed: %s\n%s", self.name, where, msg, tb.rstrip())
            else:
                log.warning("stage %s: %s failed: %s", self.name, where, msg)
            if k == DETAILED:
                log.warning("stage %s: further row failures are counted only", self.name)
            self.report(
                {
                    "row_failure": {
                        "fragment": fragment,
                        "row_id": row_id,
                        "source": source,
                        "error": msg,
                        "traceback": tb,
                    }
                }
            )


def _row_identity(
    ds: lance.LanceDataset, addr: int | None, source_of=None
) -> tuple[str | None, str | None]:
    """(id, the user's own source path) of a row: read only on failure, never in bulk."""
    if addr is None:
        return None, None
    names = set(ds.schema.names)
    cols = [c for c in ("id", "uri", "source_id") if c in names]
    if not cols:
        return None, None
    try:  # a row address is <fragment id> << 32 | <offset in the fragment>
        frag = ds.get_fragment(addr >> 32)
        row = frag.take([addr & 0xFFFFFFFF], columns=cols).to_pylist()[0]
    except Exception:  # noqa: BLE001 - a description must never fail the job
        return None, None
    source = row.get("uri")
    if source is None and row.get("source_id"):
        try:
            source = source_of(row["source_id"]) if source_of else None
        except Exception:  # noqa: BLE001
            source = None
        source = source or f"source {row['source_id']}"
    return row.get("id"), source
