"""Computing a claimed fragment's rows segment by segment, each one durable once it is worth it.

A segment saved by an earlier lease generation of the same work is reused; the others go to the
runner (with a segment pool, all at once and consumed in order). Every result is shown to the
failure watch; a checkpoint is written once enough compute seconds are at stake, and only while
the lease is still ours, so a successor's checkpoints stay its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
from sila.coordinator.checkpoints import Checkpoints, selection_signature
from sila.coordinator.faults import fault_point
from sila.coordinator.inputs import InputPlan, segment_part
from sila.coordinator.leases import LeaseStore
from sila.coordinator.steps import SegmentResult
from sila.coordinator.task import FragmentTask
from sila.coordinator.watch import FailureWatch

from sila.errors import LeaseLost


class SegmentDriver:
    """Fills `task.results` for a task whose rows are planned (`task.rows`)."""

    def __init__(
        self,
        stage,
        runner: Callable[[InputPlan, pa.RecordBatch], SegmentResult],
        checkpoints: Checkpoints,
        leases: LeaseStore,
        watch: FailureWatch,
        report: Callable[[dict], None],
        segment_rows: int,
        checkpoint_min_s: float,
        pinned=None,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self.stage, self.runner, self.checkpoints, self.leases = stage, runner, checkpoints, leases
        self.watch, self.report, self.pinned, self.pool = watch, report, pinned, pool
        self.segment_rows, self.checkpoint_min_s = segment_rows, checkpoint_min_s

    def compute(self, task: FragmentTask) -> None:
        """Compute (or reuse) every segment of `task` in order; raises LeaseLost when the lease
        went to another worker meanwhile."""
        sel, lease, key = task.rows.selection, task.lease, task.ref.key
        n = len(sel.offsets)
        sig = selection_signature(sel.offsets)
        bounds = [(a, min(a + self.segment_rows, n)) for a in range(0, n, self.segment_rows)]
        # Checkpoints can only exist if an earlier generation held this fragment.
        saved = self.checkpoints.segments(key) if lease.gen > 1 and len(bounds) > 1 else set()
        plan = InputPlan.of(self.stage, task.ds.schema, self.pinned)
        names = [f.name for f in self.stage.output_fields()]
        at_stake = 0.0  # compute seconds since the last durable point
        ahead: dict[int, Future] = {}
        if self.pool is not None:  # submit the uncached segments now, consume them in order
            for i, (a, b) in enumerate(bounds):
                if i not in saved:
                    ahead[i] = self.pool.submit(self._timed, plan, segment_part(sel, a, b))
        try:
            for i, (a, b) in enumerate(bounds):
                if lease.lost:
                    raise LeaseLost(key)
                cached = (
                    self._reuse(key, i, sig, sel.offsets[a:b], (a, b), names)
                    if i in saved
                    else None
                )
                if cached is not None:
                    task.results.append(cached)
                    self.report({"segments_reused": 1})
                    continue
                part = segment_part(sel, a, b)
                res, took = ahead.pop(i).result() if i in ahead else self._timed(plan, part)
                at_stake += took
                self.watch.observe(res, part, task.ds, task.ref.id)
                fault_point("before_checkpoint")
                if i < len(bounds) - 1 and at_stake >= self.checkpoint_min_s:
                    if not self.leases.valid(lease):  # a successor's checkpoints stay its own
                        raise LeaseLost(key)
                    self.checkpoints.save(
                        key, i, sig, res.outputs, sel.offsets[a:b], res.children, (a, b)
                    )
                    lease.segments_done, at_stake = i + 1, 0.0
                    fault_point("after_checkpoint")
                task.results.append(res)
                self.report({"segments_computed": 1})
        finally:
            for fut in ahead.values():
                fut.cancel()
        if lease.lost:
            raise LeaseLost(key)

    def _reuse(self, key: str, i: int, sig: str, offsets, bounds, names) -> SegmentResult | None:
        """A checkpoint of exactly this segment of this work, else None (discarded, counted)."""
        cached = self.checkpoints.load(key, i, sig, offsets, bounds)
        if cached is None:
            return None
        if cached[0].schema.names != names:  # outputs of another shape: not this work
            self.checkpoints.discarded += 1
            return None
        return SegmentResult(cached[0], cached[1])

    def _timed(self, plan: InputPlan, part: pa.RecordBatch) -> tuple[SegmentResult, float]:
        t0 = time.perf_counter()
        return self.runner(plan, part), time.perf_counter() - t0
