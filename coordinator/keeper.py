"""A worker's bookkeeping of what its data files mean: state records and the lazy column reset.

Every data file a worker writes either matches its columns' identity (no record needed) or gets
a state record (state.py) BEFORE its commit; once committed, the record of the file it replaced
is dropped, and records of files never committed are dropped too. A planned column reset (new
version / --recompute) happens here, once the new code has produced a good segment.
"""

from __future__ import annotations

import threading

import lance
from sila.coordinator.fragment import RowPlan
from sila.coordinator.state import Dependencies, FragmentWork, StageRecords, base_identity

from sila.schema import owner


class StateKeeper:
    def __init__(
        self,
        lake,
        stage_cls,
        identity: str,
        job: str,
        reset: bool,
        records: StageRecords | None = None,
    ) -> None:
        self.lake, self.cls, self.identity, self.job = lake, stage_cls, identity, job
        self.name = stage_cls.name
        # shared with discovery (StageProgress): records this worker writes are judged too
        self.records = records or StageRecords(lake.store, stage_cls.table, stage_cls.name)
        self.reset_pending = reset
        self.write_ds: lance.LanceDataset | None = None  # the dataset after the reset
        self.deps = Dependencies()
        self.written: dict[str, tuple[str | None, str | None]] = {}  # key -> (new, replaced)
        self._base: tuple[object, str | None] | None = None
        self._lock = threading.Lock()

    # -- the column reset ------------------------------------------------------------------------
    def before_reset(self, ds) -> bool:
        """A planned column reset has not happened yet in `ds` (the reset stamps the job id)."""
        if not self.reset_pending:
            return False
        from sila.coordinator.columns import RESET_JOB

        mine = [f for f in ds.schema if owner(f) == self.name]
        return not mine or any((f.metadata or {}).get(RESET_JOB) != self.job.encode() for f in mine)

    def target(self, ds):
        """The dataset a data file is written against: after a column reset, the new fields.
        The reset itself happens here: the caller has a good segment of the new code."""
        if not self.before_reset(ds):
            return ds
        with self._lock:
            if self.write_ds is None:
                from sila.coordinator.columns import reset_columns

                self.write_ds = reset_columns(self.lake, self.cls, self.job, self.identity)
        return self.write_ds

    # -- records ---------------------------------------------------------------------------------
    def wrote(self, ds, stem: str, work: FragmentWork, rows: RowPlan, replaced: str | None) -> None:
        """A data file `stem` was written for `work` (not committed yet)."""
        if self._plain(ds, rows):  # what a file without a record means: nothing to write
            self.written[work.ref.key] = (None, replaced)
            return
        self._record(stem, work, rows)
        self.written[work.ref.key] = (stem, replaced)

    def unchanged(self, work: FragmentWork, rows: RowPlan) -> None:
        """Nothing new to compute (e.g. no row became eligible): the data file stays, a record
        says it is complete under the current eligibility."""
        rec = work.record
        if rec is None or rows.complete != rec.complete or rec.where_hash != work.where_hash:
            self._record(work.stem, work, rows)

    def committed(self, committed: list, not_committed: list) -> None:
        for f in committed:  # the replaced data file left the manifest: so does its record
            _, old = self.written.pop(f.ref.key, (None, None))
            if old:
                self.records.forget(old)
        for f in not_committed:  # their records describe files nobody references
            new, _ = self.written.pop(f.ref.key, (None, None))
            if new:
                self.records.forget(new)

    def _record(self, stem: str, work: FragmentWork, rows: RowPlan) -> None:
        self.records.write(
            stem,
            self.identity,
            work.inputs_hash,
            work.where_hash,
            rows.complete,
            rows.computed,
            work.ref.physical_rows,
            {"job": self.job, "version": self.cls.resolved_version(), "fragment": work.ref.key},
        )

    def _plain(self, ds, rows: RowPlan) -> bool:
        """Complete, no rows tracked, no upstream, computed under the columns' own identity: the
        common case needs no record (one store write less per fragment)."""
        if not rows.complete or rows.computed is not None or self.deps.all:
            return False
        if self._base is None or self._base[0] is not ds:
            self._base = (ds, base_identity(ds, self.name))
        return self._base[1] == self.identity
