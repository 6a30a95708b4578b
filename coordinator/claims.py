"""Which fragments a worker tries next, and taking one: a lease first, then a fresh look.

Workers cooperate through leases alone. A commit leaves no lease behind (the manifest says it),
so after winning a lease the worker judges the fragment again in a manifest at most a second
old, with the one definition of done (discovery.StageProgress): a fragment someone finished,
or one compaction took away, is let go.
"""

from __future__ import annotations

import time

import lance
from sila.coordinator.discovery import StageProgress
from sila.coordinator.keeper import StateKeeper
from sila.coordinator.leases import Heartbeat, LeaseStore
from sila.coordinator.options import WorkerOptions
from sila.coordinator.state import DONE, GONE, PARTIAL, PENDING, STALE, FragmentWork
from sila.coordinator.task import FragmentTask

from sila.lake import Lake

FRESH_S = 1.0  # a listing older than this may miss a peer's commit: look again before work
BUSY_SKIP_OVER = 8  # with more candidates than this, skip those others visibly hold


class Claims:
    """Lists a worker's candidate fragments and claims them as `FragmentTask`s."""

    def __init__(
        self,
        lake: Lake,
        stage,
        progress: StageProgress,
        keeper: StateKeeper,
        leases: LeaseStore,
        heartbeat: Heartbeat,
        opts: WorkerOptions,
        owner: str,
    ) -> None:
        self.lake, self.stage, self.progress, self.keeper = lake, stage, progress, keeper
        self.leases, self.heartbeat, self.opts, self.owner = leases, heartbeat, opts, owner
        self.version = stage.resolved_version()
        self.ds: lance.LanceDataset | None = None  # the latest listing's snapshot
        self._listed_at = self._fresh_at = 0.0
        self._fresh: lance.LanceDataset | None = None

    def discover(self) -> list[FragmentWork]:
        """Every fragment of the table as this run sees it (manifest + one listing per stage)."""
        self.ds = ds = self.lake.table(self.stage.table)
        self._listed_at = self._fresh_at = time.monotonic()
        self._fresh = ds
        works = self.progress.all(ds, reset=self.keeper.before_reset(ds))
        self.keeper.deps = self.progress.deps
        return works

    def candidates(self) -> tuple[list[FragmentWork], set[str]]:
        """(fragments worth a claim attempt, in this worker's order; keys of all due ones)."""
        works = self.discover()
        if self.opts.retry_errors:
            err = self.stage.error_column()
            due = [
                w
                for w in works
                if w.status in (DONE, PARTIAL)
                and self.ds.get_fragment(w.ref.id).count_rows(f"{err} IS NOT NULL")
            ]
        else:
            due = [w for w in works if w.status in (PENDING, PARTIAL, STALE)]
        keys = {w.ref.key for w in due}
        if len(due) > BUSY_SKIP_OVER and not self.opts.retry_errors:
            busy = self.leases.busy(self.stage.table, self.stage.name)
            due = [w for w in due if w.ref.key not in busy]
        k = (self.opts.worker_index * len(due)) // max(1, self.opts.workers)
        return due[k:] + due[:k], keys  # workers start apart: less contention

    def claim(self, work: FragmentWork) -> FragmentTask | None:
        """A task for `work` under a fresh lease, or None: someone holds it, finished it, or it
        left the table."""
        lease = self.leases.acquire(
            self.stage.table,
            self.stage.name,
            work.ref.key,
            owner=self.owner,
            job=self.opts.job,
            stage_version=self.version,
        )
        if lease is None:
            return None
        if not self.opts.retry_errors and time.monotonic() - self._listed_at > FRESH_S:
            fresh = self._fresh_table()
            now = self.progress.now(fresh, work, reset=self.keeper.before_reset(fresh))
            if now.status in (DONE, GONE):  # finished by someone else, or compacted away
                self.leases.release(lease, committed=now.status == DONE)
                return None
        self.heartbeat.add(lease)
        return FragmentTask(work, self.ds, lease)

    def _fresh_table(self) -> lance.LanceDataset:
        if self._fresh is None or time.monotonic() - self._fresh_at > FRESH_S:
            self._fresh, self._fresh_at = self.lake.table(self.stage.table), time.monotonic()
        return self._fresh
