"""A fragment worker: discover -> lease -> segments (checkpointed) -> data file -> commit.

The inline executor runs one worker in-process; `--workers N` runs N of them in spawned
processes. Workers cooperate through leases alone, within a job and across jobs. What a
fragment needs (state.py) and which of its rows (fragment.py) are decided elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import pyarrow as pa
from sila.coordinator.checkpoints import Checkpoints, selection_signature
from sila.coordinator.commit import Committer, Finished, write_data_file
from sila.coordinator.discovery import is_done
from sila.coordinator.executors.inline import LocalRunner, Unwritten, done_future
from sila.coordinator.faults import fault_point
from sila.coordinator.fragment import RowPlan, finish_values, plan_rows
from sila.coordinator.gating import apply_gate
from sila.coordinator.inputs import InputPlan, segment_part
from sila.coordinator.keeper import StateKeeper
from sila.coordinator.leases import COMMITTED, Heartbeat, LeaseStore, new_owner_id
from sila.coordinator.options import WorkerOptions
from sila.coordinator.state import (
    DONE,
    PARTIAL,
    PENDING,
    STALE,
    FragmentWork,
    StageRecords,
    classify,
    dependencies,
    file_stem,
)
from sila.coordinator.steps import SegmentResult
from sila.coordinator.watch import FailureWatch

from sila.errors import LeaseLost
from sila.lake import Lake
from sila.stage import Stage, StageContext

__all__ = ["FragmentWorker", "LocalRunner", "WorkerOptions"]


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
        # a stage gated on the decision columns that exist gets its `where` resolved now
        stage = apply_gate(stage, lake.table(type(stage).table).schema)
        self.lake, self.stage, self.opts, self.report = lake, stage, opts, report
        cls = type(stage)
        self.table, self.name = cls.table, cls.name
        self.version = cls.resolved_version()
        self.identity = opts.identity or stage.work_identity()
        self.owner = new_owner_id()
        self.leases = LeaseStore(lake.store, ttl=opts.ttl)
        self.heartbeat = Heartbeat(self.leases, opts.heartbeat or opts.ttl / 4)
        self.checkpoints = Checkpoints(lake.store, self.table, self.name, self.identity)
        self.keeper = StateKeeper(lake, cls, self.identity, opts.job, opts.reset)
        self.records = self.keeper.records
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
        self.watch = FailureWatch(self.name, cls.error_column(), report, self._source_uri)
        self.held: list[Finished] = []  # finished while the stage is still being judged
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
        self._listed_at = self._fresh_at = 0.0
        self._fresh = None

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> None:
        self.runner.start()
        self.heartbeat.start()
        try:
            self._loop()
            self.watch.finish()  # every row failed unexpectedly: broken, nothing committed
            self._release_held()
            self.committer.flush()
        finally:
            self.heartbeat.stop()
            self.runner.close()
            if self.segment_pool is not None:
                self.segment_pool.shutdown(wait=True, cancel_futures=True)
            for lease in list(self.heartbeat.held.values()):  # abandoned on error: free them now
                if lease.state != COMMITTED:
                    self.leases.release(lease)
            if self.checkpoints.discarded:
                self.report({"checkpoints_discarded": self.checkpoints.discarded})
                self.checkpoints.discarded = 0

    def discover(self) -> list[FragmentWork]:
        """Every fragment of the table as this run sees it (manifest + one listing per stage)."""
        self.ds = ds = self.lake.table(self.table)
        self._listed_at = self._fresh_at = time.monotonic()
        self._fresh = ds
        cls = type(self.stage)
        self.keeper.deps = deps = dependencies(ds.schema, cls)
        upstream = {u: StageRecords(self.lake.store, self.table, u).load() for u in deps.all}
        works = classify(ds, cls, self.identity, self.records.load(), upstream, deps)
        if self.keeper.before_reset(ds):  # the columns are reset before the first commit: redo all
            for w in works:
                if w.status != "deferred":
                    w.status, w.record = PENDING, None
        return works

    def _candidates(self) -> tuple[list[FragmentWork], set[str]]:
        """(fragments worth a claim attempt, in this worker's order; keys of all pending ones)."""
        works = self.discover()
        ds = self.ds
        if self.opts.retry_errors:
            err = self.stage.error_column()
            pending = [
                w
                for w in works
                if w.status in (DONE, PARTIAL)
                and ds.get_fragment(w.ref.id).count_rows(f"{err} IS NOT NULL")
            ]
        else:
            pending = [w for w in works if w.status in (PENDING, PARTIAL, STALE)]
        keys = {w.ref.key for w in pending}
        if len(pending) > 8 and not self.opts.retry_errors:  # skip what others clearly hold
            busy = self.leases.busy(self.table, self.name)
            pending = [w for w in pending if w.ref.key not in busy]
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
                if fin is None:
                    continue
                self.held.append(fin)
                if self.watch.judging:  # a broken stage commits nothing: hold until judged
                    continue
                self._release_held()
                if self.opts.retry_errors:
                    self.committer.flush()  # retries replace done fragments: commit promptly

        poll = self.opts.poll_s
        try:
            while True:
                listed, pending = self._candidates()
                candidates = [w for w in listed if w.ref.key not in attempted]
                if not (pending - attempted) and not inflight:
                    return  # done, or only fragments this worker already took its turn on
                progressed = False
                for work in candidates:
                    while len(inflight) >= self.concurrency:
                        collect(block=True)
                    lease = self._claim(work)
                    if lease is None:
                        continue
                    attempted.add(work.ref.key)
                    progressed = True
                    if pool is None:
                        inflight.add(done_future(self._process_or_drop, work, lease))
                        collect(block=False)
                    else:
                        inflight.add(pool.submit(self._process_or_drop, work, lease))
                    if self.committer.due():
                        self.committer.flush()
                while inflight:
                    collect(block=True)
                if not self.watch.judging:
                    self._release_held()
                self.committer.flush()
                if progressed:
                    poll = self.opts.poll_s
                else:  # the rest is leased by others: wait (they may die), backing off
                    time.sleep(poll)
                    poll = min(poll * 2, max(self.opts.poll_s, self.opts.ttl / 4))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _release_held(self) -> None:
        held, self.held = self.held, []
        for fin in held:
            if isinstance(fin, Unwritten):  # computed before the reset could happen
                fin = self._finish(*fin.args)
            self.committer.add(fin)

    def _claim(self, work: FragmentWork):
        ref = work.ref
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
        # second may miss a peer's commit: ask a manifest at most a second old. (Fragments that
        # already hold values are replaced, not added: presence says nothing about them.)
        if (
            not self.opts.retry_errors
            and not work.has_values
            and time.monotonic() - self._listed_at > 1.0
            and is_done(self._fresh_table(), self.name, ref.id)
        ):
            self.leases.release(lease, committed=True)  # finished by someone else
            return None
        self.heartbeat.add(lease)
        return lease

    def _source_uri(self, source_id: str) -> str | None:
        """The user's own path of a source (for a failed clip's log line); read on failure only."""
        quoted = source_id.replace("'", "''")
        t = self.lake.table("sources").to_table(columns=["uri"], filter=f"id = '{quoted}'")
        return t.column("uri")[0].as_py() if t.num_rows else None

    def _fresh_table(self):
        if time.monotonic() - self._fresh_at > 1.0:
            self._fresh, self._fresh_at = self.lake.table(self.table), time.monotonic()
        return self._fresh

    def _process_or_drop(self, work: FragmentWork, lease) -> Finished | None:
        try:
            return self._process(work, lease)
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
        self.keeper.committed(committed, [*skipped, *lost])
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
    def _process(self, work: FragmentWork, lease) -> Finished | None:
        cls = type(self.stage)
        ref = work.ref
        ds = self.ds  # the snapshot the fragment was listed from: no manifest re-read
        fresh = self.keeper.before_reset(ds) or work.status == PENDING
        rows = plan_rows(
            ds, cls, work, self.records, self.opts.where, self.opts.retry_errors, fresh
        )
        sel = rows.selection
        n = len(sel.offsets)
        if n == 0 and work.has_values and not fresh:
            self.keeper.unchanged(work, rows)
            self.heartbeat.drop(lease)
            self.leases.release(lease, committed=True)
            return None
        sig = selection_signature(sel.offsets)
        bounds = [(a, min(a + self.segment_rows, n)) for a in range(0, n, self.segment_rows)]
        # Checkpoints can only exist if an earlier generation held this fragment.
        saved = self.checkpoints.segments(ref.key) if lease.gen > 1 and len(bounds) > 1 else set()
        results: list[SegmentResult] = []
        plan = InputPlan.of(cls, ds.schema)
        names = [f.name for f in cls.output_fields()]
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
                cached = None
                if i in saved:
                    cached = self.checkpoints.load(ref.key, i, sig, sel.offsets[a:b], (a, b))
                    if cached is not None and cached[0].schema.names != names:
                        cached = None  # outputs of another shape: not this work
                        self.checkpoints.discarded += 1
                if cached is not None:
                    results.append(SegmentResult(cached[0], cached[1]))
                    self.report({"segments_reused": 1})
                    continue
                part = segment_part(sel, a, b)
                if i in ahead:
                    res, took = ahead.pop(i).result()
                else:
                    res, took = self._timed(plan, part)
                at_stake += took
                self.watch.observe(res, part, ds, ref.id)
                fault_point("before_checkpoint")
                if i < len(bounds) - 1 and at_stake >= self.opts.checkpoint_min_s:
                    if not self.leases.valid(lease):  # a successor's checkpoints stay its own
                        raise LeaseLost(ref.key)
                    self.checkpoints.save(
                        ref.key, i, sig, res.outputs, sel.offsets[a:b], res.children, (a, b)
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
        if self.keeper.before_reset(ds) and self.watch.judging:
            return Unwritten((ds, work, lease, rows, results))  # reset once the code proves good
        return self._finish(ds, work, lease, rows, results)

    def _timed(self, plan: InputPlan, part: pa.RecordBatch) -> tuple[SegmentResult, float]:
        t0 = time.perf_counter()
        return self.runner(plan, part), time.perf_counter() - t0

    def _finish(
        self, ds, work: FragmentWork, lease, rows: RowPlan, results: list[SegmentResult]
    ) -> Finished | None:
        cls = type(self.stage)
        ref = work.ref
        schema = pa.schema(cls.output_fields())
        values = (
            pa.Table.from_batches([r.outputs for r in results], schema=schema)
            if results
            else schema.empty_table()
        )
        target = self.keeper.target(ds)
        full = finish_values(ds, cls, ref, rows, values)
        children = [r.children for r in results if r.children is not None and r.children.num_rows]
        if cls.kind == "explode":  # replace the computed parents' children in one commit
            from sila.coordinator.children import append_children

            sel = rows.selection.table
            parents = sel.column("id").to_pylist() if "id" in sel.column_names else None
            kids = pa.concat_tables(children) if children else None
            self.report({"children": append_children(self.lake, cls, kids, parents)})
        fault_point("before_commit")
        data_file = write_data_file(target, full)
        replaced = work.stem if (work.has_values and target is ds) else None
        self.keeper.wrote(target, file_stem(data_file.path), work, rows, replaced)
        n_errors = len(rows.selection.offsets) - values.column(cls.error_column()).null_count
        return Finished(
            ref,
            data_file,
            lease,
            rows=len(rows.selection.offsets),
            errors=n_errors,
            replace=replaced is not None or self.opts.retry_errors,
        )
