"""A fragment worker: discover -> claim -> compute (checkpointed) -> data file -> commit.

The inline executor runs one worker in-process; `--workers N` runs N of them in spawned
processes. Workers cooperate through leases alone, within a job and across jobs. One
`FragmentTask` (task.py) carries a fragment through every step: claims.py lists and claims,
segments.py computes, this module writes the data file and hands it to the committer. What a
fragment needs (discovery.py / state.py) and which of its rows (fragment.py) are decided elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import pyarrow as pa
from sila.coordinator.checkpoints import Checkpoints
from sila.coordinator.claims import Claims
from sila.coordinator.commit import Committer, write_data_file
from sila.coordinator.discovery import StageProgress
from sila.coordinator.executors.inline import LocalRunner, done_future
from sila.coordinator.faults import fault_point
from sila.coordinator.fragment import finish_values, plan_rows
from sila.coordinator.gating import bind_gate
from sila.coordinator.keeper import StateKeeper
from sila.coordinator.leases import COMMITTED, Heartbeat, LeaseStore, new_owner_id
from sila.coordinator.lookups import pin_lookups
from sila.coordinator.options import WorkerOptions
from sila.coordinator.segments import SegmentDriver
from sila.coordinator.state import PENDING, file_stem
from sila.coordinator.task import FragmentTask
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
        # the job's row filter (declared `where` + the gate resolved on the decision columns
        # that exist) lives on this instance; it is passed on as the stage, never its class
        stage = bind_gate(stage, lake.table(stage.table).schema)
        self.lake, self.stage, self.opts, self.report = lake, stage, opts, report
        self.table, self.name = stage.table, stage.name
        self.identity = opts.identity or stage.work_identity()
        self.pinned = pin_lookups(lake, stage)  # looked-up tables at the job's start
        self.owner = new_owner_id()
        self.leases = LeaseStore(lake.store, ttl=opts.ttl)
        self.heartbeat = Heartbeat(self.leases, opts.heartbeat or opts.ttl / 4)
        self.checkpoints = Checkpoints(lake.store, self.table, self.name, self.identity)
        progress = StageProgress(lake.store, stage, self.identity)
        self.keeper = StateKeeper(
            lake, stage, self.identity, opts.job, opts.reset, progress.records
        )
        self.records = self.keeper.records
        self.claims = Claims(
            lake, stage, progress, self.keeper, self.leases, self.heartbeat, opts, self.owner
        )
        self.committer = Committer(
            lake,
            progress,
            self.leases,
            opts.commit_batch,
            opts.commit_window_s,
            on_commit=self._committed,
        )
        self.watch = FailureWatch(self.name, stage.error_column(), report, self._source_uri)
        self.held: list[FragmentTask] = []  # computed while the stage is still being judged
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
        self.segments = SegmentDriver(
            stage,
            lambda plan, part: self.runner(plan, part),  # the executor may wrap `runner` later
            self.checkpoints,
            self.leases,
            self.watch,
            report,
            opts.segment_rows or stage.segment_rows,
            opts.checkpoint_min_s,
            self.pinned,
            self.segment_pool,
        )

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Work until no fragment this worker may take is left; commit what it finished."""
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

    def discover(self):
        """Every fragment of the table as this run sees it (manifest + one listing per stage)."""
        return self.claims.discover()

    def _loop(self) -> None:
        attempted: set[str] = set()  # fragments this worker finished or saw committed
        pool = (
            ThreadPoolExecutor(self.concurrency, "sila-fragment") if self.concurrency > 1 else None
        )
        inflight: set[Future] = set()
        poll = self.opts.poll_s
        try:
            while True:
                listed, due = self.claims.candidates()
                if not (due - attempted) and not inflight:
                    return  # done, or only fragments this worker already took its turn on
                progressed = False
                for work in listed:
                    if work.ref.key in attempted:
                        continue
                    while len(inflight) >= self.concurrency:
                        self._collect(inflight, block=True)
                    task = self.claims.claim(work)
                    if task is None:
                        continue
                    attempted.add(work.ref.key)
                    progressed = True
                    if pool is None:
                        inflight.add(done_future(self._process_or_drop, task))
                        self._collect(inflight, block=False)
                    else:
                        inflight.add(pool.submit(self._process_or_drop, task))
                    if self.committer.due():
                        self.committer.flush()
                while inflight:
                    self._collect(inflight, block=True)
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

    def _collect(self, inflight: set[Future], block: bool) -> None:
        """Take the finished computations: hold them while the stage is judged, else commit."""
        if not inflight:
            return
        done, _ = wait(
            inflight,
            return_when=FIRST_COMPLETED if block else ALL_COMPLETED,
            timeout=None if block else 0,
        )
        for fut in done:
            inflight.discard(fut)
            task = fut.result()  # re-raises StageFailed / ContractError: the job stops
            if task is None:
                continue
            self.held.append(task)
            if self.watch.judging:  # a broken stage commits nothing: hold until judged
                continue
            self._release_held()
            if self.opts.retry_errors:
                self.committer.flush()  # retries replace done fragments: commit promptly

    def _release_held(self) -> None:
        held, self.held = self.held, []
        for task in held:
            if not task.written:  # computed before the column reset could happen
                self._finish(task)
            self.committer.add(task)

    def _source_uri(self, source_id: str) -> str | None:
        """The user's own path of a source (for a failed clip's log line); read on failure only."""
        quoted = source_id.replace("'", "''")
        t = self.lake.table("sources").to_table(columns=["uri"], filter=f"id = '{quoted}'")
        return t.column("uri")[0].as_py() if t.num_rows else None

    def _committed(
        self,
        committed: list[FragmentTask],
        skipped: list[FragmentTask],
        lost: list[FragmentTask] = (),
    ) -> None:
        for t in lost:  # another worker owns these now: its checkpoints are its own
            self.heartbeat.drop(t.lease)
        for t in committed + skipped:
            if t.lease:
                self.heartbeat.drop(t.lease)
            if t.lease is None or t.lease.gen > 1 or t.lease.segments_done:  # else none written
                self.checkpoints.clear(t.ref.key)
        self.keeper.committed(committed, [*skipped, *lost])
        self.report(
            {
                "fragments_done": len(committed),
                "fragments_skipped": len(skipped),
                "commits": 1 if committed else 0,
                "rows": sum(t.computed_rows for t in committed),
                "row_errors": sum(t.errors for t in committed),
                "lost_leases": len(lost),
            }
        )

    # -- one fragment ---------------------------------------------------------------------------
    def _process_or_drop(self, task: FragmentTask) -> FragmentTask | None:
        try:
            return self._process(task)
        except LeaseLost:
            self.heartbeat.drop(task.lease)
            self.report({"lost_leases": 1})
            return None

    def _process(self, task: FragmentTask) -> FragmentTask | None:
        """Plan the task's rows and compute them; None when nothing is left to write."""
        ds, work = task.ds, task.work  # the snapshot it was listed from: no manifest re-read
        fresh = self.keeper.before_reset(ds) or work.status == PENDING
        opts = self.opts
        task.rows = plan_rows(
            ds, self.stage, work, self.records, opts.where, opts.retry_errors, fresh
        )
        if task.computed_rows == 0 and work.has_values and not fresh:
            self.keeper.unchanged(work, task.rows)
            self.heartbeat.drop(task.lease)
            self.leases.release(task.lease, committed=True)
            return None
        self.segments.compute(task)
        if self.keeper.before_reset(ds) and self.watch.judging:
            return task  # unwritten: reset (and write) once the code proves good
        self._finish(task)
        return task

    def _finish(self, task: FragmentTask) -> None:
        """Lay the computed rows over the kept values and write the task's data file."""
        stage, ds, work, rows = self.stage, task.ds, task.work, task.rows
        schema = pa.schema(stage.output_fields())
        values = (
            pa.Table.from_batches([r.outputs for r in task.results], schema=schema)
            if task.results
            else schema.empty_table()
        )
        target = self.keeper.target(ds)
        full = finish_values(ds, stage, task.ref, rows, values)
        if stage.kind == "explode":  # replace the computed parents' children in one commit
            self._append_children(task)
        fault_point("before_commit")
        task.data_file = write_data_file(target, full)
        replaced = work.stem if (work.has_values and target is ds) else None
        self.keeper.wrote(target, file_stem(task.data_file.path), work, rows, replaced)
        task.errors = task.computed_rows - values.column(stage.error_column()).null_count
        task.replace = self.opts.retry_errors

    def _append_children(self, task: FragmentTask) -> None:
        from sila.coordinator.children import append_children

        kids = [r.children for r in task.results if r.children is not None and r.children.num_rows]
        sel = task.rows.selection.table
        parents = sel.column("id").to_pylist() if "id" in sel.column_names else None
        kids_table = pa.concat_tables(kids) if kids else None
        self.report({"children": append_children(self.lake, self.stage, kids_table, parents)})
