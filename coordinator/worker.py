"""A fragment worker: discover -> lease -> segments (checkpointed) -> data file -> commit.

The inline executor runs one worker in-process; `--workers N` runs N of them in spawned
processes. Workers cooperate through leases alone, within a job and across jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sila.coordinator.checkpoints import Checkpoints, selection_signature
from sila.coordinator.commit import Committer, Finished, write_data_file
from sila.coordinator.discovery import FragmentRef, is_done, split_fragments
from sila.coordinator.faults import fault_point
from sila.coordinator.inputs import (
    BlobMaterializer,
    InputPlan,
    combine_where,
    materialize,
    scatter,
    segment_part,
    select_rows,
)
from sila.coordinator.leases import COMMITTED, Heartbeat, LeaseStore, new_owner_id
from sila.coordinator.steps import SegmentResult, run_steps, setup_stage

from sila.errors import LeaseLost, StageFailed
from sila.lake import Lake
from sila.stage import Stage, StageContext

log = logging.getLogger(__name__)


@dataclass
class WorkerOptions:
    job: str
    where: str | None = None
    retry_errors: bool = False
    ttl: float = 60.0
    heartbeat: float | None = None  # default ttl / 4
    commit_batch: int = 64
    commit_window_s: float = 2.0
    segment_rows: int | None = None
    endpoint_url: str | None = None
    allow_random_weights: bool = False
    worker_index: int = 0
    workers: int = 1
    poll_s: float = 1.0
    # Checkpoint a segment only once this much compute is at stake since the last durable point:
    # cheap stages then pay nothing, expensive ones checkpoint every segment.
    checkpoint_min_s: float = 1.0


class LocalRunner:
    """Runs a segment's three steps in this process (inline and process executors)."""

    def __init__(self, lake: Lake, stage: Stage, ctx: StageContext) -> None:
        self.lake, self.stage, self.ctx = lake, stage, ctx
        self.blobs = BlobMaterializer(lake)

    def start(self) -> None:
        setup_stage(self.stage, self.ctx)  # its failure fails the job, naming the stage's words

    def __call__(self, plan: InputPlan, part: pa.RecordBatch) -> SegmentResult:
        try:
            return run_steps(self.stage, materialize(plan, part, self.blobs))
        finally:
            self.blobs.trim()

    def close(self) -> None:
        self.blobs.close()


class FragmentWorker:
    """Claims fragments and drives them to a commit; `runner` computes their segments and
    `concurrency` fragments may be in flight at once (the Ray executor uses both)."""

    def __init__(
        self,
        lake: Lake,
        stage: Stage,
        opts: WorkerOptions,
        report: Callable[[dict], None],
        runner=None,
        concurrency: int = 1,
        segment_concurrency: int = 1,
    ):
        self.lake, self.stage, self.opts, self.report = lake, stage, opts, report
        cls = type(stage)
        self.table, self.name = cls.table, cls.name
        self.version = cls.resolved_version()
        self.owner = new_owner_id()
        self.leases = LeaseStore(lake.store, ttl=opts.ttl)
        self.heartbeat = Heartbeat(self.leases, opts.heartbeat or opts.ttl / 4)
        self.checkpoints = Checkpoints(lake.store, self.table, self.name, self.version)
        self.committer = Committer(
            lake,
            self.table,
            self.name,
            self.leases,
            opts.commit_batch,
            opts.commit_window_s,
            on_commit=self._committed,
        )
        self.segment_rows = opts.segment_rows or cls.segment_rows
        self.where = combine_where(
            cls.where,
            opts.where,
            f"{cls.error_column()} IS NOT NULL" if opts.retry_errors else None,
        )
        self.ok_rows = 0
        self.unexpected = 0
        self.concurrency = max(1, concurrency)
        # Segments of one fragment computed at once (Ray: keeps every actor busy on the last
        # fragment too). Their number across all fragments is bounded by this pool's size.
        self.segment_pool = (
            ThreadPoolExecutor(segment_concurrency, "sila-segment")
            if segment_concurrency > 1
            else None
        )
        self.runner = runner or LocalRunner(
            lake,
            stage,
            StageContext(
                lake.uri,
                lake.storage_options,
                opts.endpoint_url,
                self.owner,
                opts.allow_random_weights,
            ),
        )
        self._lock = threading.Lock()

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> None:
        self.runner.start()
        self.heartbeat.start()
        try:
            self._loop()
            self.committer.flush()
        finally:
            self.heartbeat.stop()
            self.runner.close()
            if self.segment_pool is not None:
                self.segment_pool.shutdown(wait=True, cancel_futures=True)
            for lease in list(self.heartbeat.held.values()):  # abandoned on error: free them now
                if lease.state != COMMITTED:
                    self.leases.release(lease)

    def _candidates(self) -> tuple[list[FragmentRef], set[str]]:
        """(fragments worth a claim attempt, in this worker's order; keys of all pending ones)."""
        self.ds = ds = self.lake.table(self.table)
        self._listed_at = self._fresh_at = time.monotonic()
        self._fresh = ds
        done, pending = split_fragments(ds, self.name)
        if self.opts.retry_errors:
            err = self.stage.error_column()
            with_errors = {
                f.id for f in done if ds.get_fragment(f.id).count_rows(f"{err} IS NOT NULL")
            }
            pending = [f for f in done if f.id in with_errors]
        keys = {f.key for f in pending}
        if len(pending) > 8 and not self.opts.retry_errors:  # skip what others clearly hold
            busy = self.leases.busy(self.table, self.name)
            pending = [f for f in pending if f.key not in busy]
        k = (self.opts.worker_index * len(pending)) // max(1, self.opts.workers)
        return pending[k:] + pending[:k], keys  # workers start apart: less contention

    def _loop(self) -> None:
        attempted: set[str] = set()  # fragments this worker finished or saw committed
        pool = (
            ThreadPoolExecutor(self.concurrency, "sila-fragment") if self.concurrency > 1 else None
        )
        inflight: set[Future] = set()

        def collect(block: bool) -> None:
            if not inflight:
                return
            done, _ = wait(
                inflight,
                return_when=FIRST_COMPLETED if block else ALL_COMPLETED,
                timeout=None if block else 0,
            )
            for fut in done:
                inflight.discard(fut)
                fin = fut.result()  # re-raises StageFailed / ContractError: the job stops
                if fin is not None:
                    self.committer.add(fin)
                    if self.opts.retry_errors:
                        self.committer.flush()  # retries replace done fragments: commit promptly

        poll = self.opts.poll_s
        try:
            while True:
                listed, pending = self._candidates()
                candidates = [f for f in listed if f.key not in attempted]
                if not (pending - attempted) and not inflight:
                    return  # done, or only fragments this worker already took its turn on
                progressed = False
                for ref in candidates:
                    while len(inflight) >= self.concurrency:
                        collect(block=True)
                    lease = self._claim(ref)
                    if lease is None:
                        continue
                    attempted.add(ref.key)
                    progressed = True
                    if pool is None:
                        inflight.add(_done_future(self._process_or_drop, ref, lease))
                        collect(block=False)
                    else:
                        inflight.add(pool.submit(self._process_or_drop, ref, lease))
                    if self.committer.due():
                        self.committer.flush()
                while inflight:
                    collect(block=True)
                self.committer.flush()
                if progressed:
                    poll = self.opts.poll_s
                else:  # the rest is leased by others: wait (they may die), backing off
                    time.sleep(poll)
                    poll = min(poll * 2, max(self.opts.poll_s, self.opts.ttl / 4))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _claim(self, ref: FragmentRef):
        lease = self.leases.acquire(
            self.table,
            self.name,
            ref.key,
            owner=self.owner,
            job=self.opts.job,
            stage_version=self.version,
        )
        if lease is None:
            return None
        # A commit leaves no lease file (the manifest says it), so a listing older than a
        # second may miss a peer's commit: ask a manifest at most a second old.
        if (
            not self.opts.retry_errors
            and time.monotonic() - self._listed_at > 1.0
            and is_done(self._fresh_table(), self.name, ref.id)
        ):
            self.leases.release(lease, committed=True)  # finished by someone else
            return None
        self.heartbeat.add(lease)
        return lease

    def _fresh_table(self):
        if time.monotonic() - self._fresh_at > 1.0:
            self._fresh, self._fresh_at = self.lake.table(self.table), time.monotonic()
        return self._fresh

    def _process_or_drop(self, ref: FragmentRef, lease) -> Finished | None:
        try:
            return self._process(ref, lease)
        except LeaseLost:
            self.heartbeat.drop(lease)
            self.report({"lost_leases": 1})
            return None

    def _committed(
        self, committed: list[Finished], skipped: list[Finished], lost: list[Finished] = ()
    ) -> None:
        for f in lost:  # another worker owns these now: its checkpoints are its own
            self.heartbeat.drop(f.lease)
        for f in committed + skipped:
            if f.lease:
                self.heartbeat.drop(f.lease)
            if (
                f.lease is None or f.lease.gen > 1 or f.lease.segments_done
            ):  # else none were written
                self.checkpoints.clear(f.ref.key)
        self.report(
            {
                "fragments_done": len(committed),
                "fragments_skipped": len(skipped),
                "commits": 1 if committed else 0,
                "rows": sum(f.rows for f in committed),
                "row_errors": sum(f.errors for f in committed),
                "lost_leases": len(lost),
            }
        )

    # -- one fragment ---------------------------------------------------------------------------
    def _process(self, ref: FragmentRef, lease) -> Finished:
        cls = type(self.stage)
        ds = self.ds  # the snapshot the fragment was listed from: no manifest re-read
        sel = select_rows(ds, cls, ref.id, self.where)
        n = len(sel.offsets)
        sig = selection_signature(sel.offsets)
        bounds = [(a, min(a + self.segment_rows, n)) for a in range(0, n, self.segment_rows)]
        # Checkpoints can only exist if an earlier generation held this fragment.
        saved = self.checkpoints.segments(ref.key) if lease.gen > 1 and len(bounds) > 1 else set()
        results: list[SegmentResult] = []
        plan = InputPlan.of(cls, ds.schema)
        at_stake = 0.0  # compute seconds since the last durable point
        ahead: dict[int, Future] = {}
        if self.segment_pool is not None:  # submit the uncached segments now, consume in order
            for i, (a, b) in enumerate(bounds):
                if i not in saved:
                    ahead[i] = self.segment_pool.submit(self._timed, plan, segment_part(sel, a, b))
        try:
            for i, (a, b) in enumerate(bounds):
                if lease.lost:
                    raise LeaseLost(ref.key)
                cached = self.checkpoints.load(ref.key, i, sig) if i in saved else None
                if cached is not None:
                    results.append(SegmentResult(cached[0], cached[1]))
                    self.report({"segments_reused": 1})
                    continue
                if i in ahead:
                    res, took = ahead.pop(i).result()
                else:
                    res, took = self._timed(plan, segment_part(sel, a, b))
                at_stake += took
                self._watch_for_bugs(res, b - a)
                fault_point("before_checkpoint")
                if i < len(bounds) - 1 and at_stake >= self.opts.checkpoint_min_s:
                    if not self.leases.valid(lease):  # a successor's checkpoints stay its own
                        raise LeaseLost(ref.key)
                    self.checkpoints.save(
                        ref.key, i, sig, res.outputs, sel.offsets[a:b], res.children
                    )
                    lease.segments_done, at_stake = i + 1, 0.0
                    fault_point("after_checkpoint")
                results.append(res)
                self.report({"segments_computed": 1})
        finally:
            for fut in ahead.values():
                fut.cancel()
        if lease.lost:
            raise LeaseLost(ref.key)
        return self._finish(ds, ref, lease, sel.offsets, results)

    def _timed(self, plan: InputPlan, part: pa.RecordBatch) -> tuple[SegmentResult, float]:
        t0 = time.perf_counter()
        return self.runner(plan, part), time.perf_counter() - t0

    def _finish(
        self, ds, ref: FragmentRef, lease, offsets: np.ndarray, results: list[SegmentResult]
    ) -> Finished:
        cls = type(self.stage)
        schema = pa.schema(cls.output_fields())
        values = (
            pa.Table.from_batches([r.outputs for r in results], schema=schema)
            if results
            else schema.empty_table()
        )
        base = None
        if self.opts.retry_errors:
            base = ds.get_fragment(ref.id).to_table(columns=schema.names).cast(schema)
        full = scatter(ref.physical_rows, offsets, values, base)
        children = [r.children for r in results if r.children is not None and r.children.num_rows]
        if children:
            from sila.coordinator.children import append_children

            self.report({"children": append_children(self.lake, cls, pa.concat_tables(children))})
        fault_point("before_commit")
        data_file = write_data_file(ds, full)
        n_errors = len(offsets) - values.column(cls.error_column()).null_count
        return Finished(
            ref,
            data_file,
            lease,
            rows=len(offsets),
            errors=n_errors,
            replace=self.opts.retry_errors,
        )

    def _watch_for_bugs(self, res: SegmentResult, n: int) -> None:
        """A stage that fails every row it has ever seen is broken: stop before writing more."""
        with self._lock:
            self.unexpected += res.unexpected_failures
            self.ok_rows += n - res.unexpected_failures
        if self.ok_rows == 0 and self.unexpected >= 8:
            err = res.outputs.column(type(self.stage).error_column())[0].as_py()
            raise StageFailed(
                f"stage '{self.name}' failed on all of the first {self.unexpected} rows it processed "
                f"(e.g. {err}). This looks like a bug in the stage, not bad data: nothing was "
                "committed; fix it and run again."
            )


def _done_future(fn, *args) -> Future:
    """Run `fn` now, in this thread, and wrap the outcome as a finished Future (inline mode)."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except BaseException as e:  # noqa: BLE001 - re-raised by fut.result()
        fut.set_exception(e)
    return fut
