"""Per-fragment data files and coalesced DataReplacement commits.

Each finished fragment becomes ONE new data file holding all of a stage's fields; finished
fragments are grouped into one commit (LANCE_NOTES 10) and each lands whole, exactly once.
Before every attempt each fragment is judged again (discovery.StageProgress, the one definition
of done): one someone else finished meanwhile is skipped, one that left the manifest (compacted)
is dropped as gone; a fragment a peer only partly computed is still committed.
"""

from __future__ import annotations

import logging
import time

import lance
import pyarrow as pa
from lance import LanceOperation
from lance.commit import CommitConflictError
from sila.coordinator.discovery import StageProgress
from sila.coordinator.faults import fault_point
from sila.coordinator.leases import LeaseStore
from sila.coordinator.state import DONE, GONE
from sila.coordinator.task import FragmentTask

from sila.errors import LakeError
from sila.lake import Lake

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 30


def write_data_file(ds: lance.LanceDataset, table: pa.Table):
    """Write `table` (all physical rows of one fragment) as one data file with the dataset's field ids."""
    from sila.schema import blob_field, is_blob

    # once a blob column holds data, Lance reports it as its blob-v2 extension type, which a
    # large_binary column cannot be cast to: write blobs as declared (a second run would fail)
    schema = pa.schema(
        [blob_field(n) if is_blob(f := ds.schema.field(n)) else f for n in table.schema.names]
    )
    table = table.cast(schema)
    metas = lance.fragment.write_fragments(
        table, ds, schema=schema, max_rows_per_file=max(1, table.num_rows)
    )
    if len(metas) != 1 or len(metas[0].files) != 1:
        raise LakeError(f"expected one data file for one fragment, got {len(metas)} fragments")
    return metas[0].files[0]


class Committer:
    """Groups written tasks; `flush` commits them in one DataReplacement.

    `on_commit(committed, skipped, lost)` follows every flush: skipped tasks were finished by
    someone else or left the manifest, lost ones lost their lease before the commit."""

    def __init__(
        self,
        lake: Lake,
        progress: StageProgress,
        leases: LeaseStore | None,
        max_batch: int = 64,
        max_wait_s: float = 2.0,
        on_commit=None,
    ) -> None:
        self.lake, self.progress, self.leases = lake, progress, leases
        self.table, self.stage = progress.stage.table, progress.stage.name
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.pending: list[FragmentTask] = []
        self.oldest = 0.0
        self.on_commit = on_commit

    def add(self, task: FragmentTask) -> None:
        """Queue a written task; flushes when the batch is full or its oldest task waited."""
        if not self.pending:
            self.oldest = time.monotonic()
        self.pending.append(task)
        if len(self.pending) >= self.max_batch or time.monotonic() - self.oldest >= self.max_wait_s:
            self.flush()

    def due(self) -> bool:
        """The oldest queued task has waited its window."""
        return bool(self.pending) and time.monotonic() - self.oldest >= self.max_wait_s

    def flush(self) -> None:
        """Commit every queued task that is still ours and still due, in one commit."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        skipped: list[FragmentTask] = []
        lost: list[FragmentTask] = []
        for attempt in range(COMMIT_ATTEMPTS):
            ds = self.lake.table(self.table)
            todo, gone = self._still_due(ds, batch)
            skipped += [t for t in batch if t not in todo]
            if gone:
                log.info(
                    "stage %s: %d fragment(s) left the table before their commit (compacted): %s",
                    self.stage,
                    len(gone),
                    ", ".join(t.ref.key for t in gone[:5]),
                )
            fault_point("during_commit")
            # Fencing, right before every attempt (a retry may come long after the first one, or
            # the process may have been paused): never commit a fragment whose lease we lost.
            owned = [t for t in todo if self._owned(t)]
            lost += [t for t in todo if t not in owned]
            batch = owned
            if not batch:
                break
            groups = [LanceOperation.DataReplacementGroup(t.ref.id, t.data_file) for t in batch]
            try:
                lance.LanceDataset.commit(
                    ds,  # its session and object store: no second open of the table
                    LanceOperation.DataReplacement(groups),
                    read_version=ds.version,
                    storage_options=self.lake.storage_options or None,
                )
                break
            except CommitConflictError as e:
                log.info("commit conflict (attempt %d): %s", attempt + 1, str(e).split(",")[0])
                time.sleep(min(0.05 * 2**attempt, 1.0))
        else:
            raise LakeError(
                f"could not commit {len(batch)} fragment(s) of stage '{self.stage}' after "
                f"{COMMIT_ATTEMPTS} attempts"
            )
        self._release(batch, skipped, lost)
        if self.on_commit:
            self.on_commit(batch, skipped, lost)

    def _still_due(
        self, ds: lance.LanceDataset, batch: list[FragmentTask]
    ) -> tuple[list[FragmentTask], list[FragmentTask]]:
        """(tasks to commit, tasks whose fragment left the manifest), judged in `ds`."""
        todo: list[FragmentTask] = []
        gone: list[FragmentTask] = []
        for t in batch:
            now = self.progress.now(ds, t.work)
            if now.status == GONE:
                gone.append(t)
            elif t.replace or now.status != DONE:
                todo.append(t)
        return todo, gone

    def _release(
        self, committed: list[FragmentTask], skipped: list[FragmentTask], lost: list[FragmentTask]
    ) -> None:
        if self.leases is not None:
            for t in committed:
                if t.lease is not None:
                    self.leases.release(t.lease, committed=True)
            for t in skipped:
                if t.lease is not None:
                    self.leases.release(t.lease)
        if lost:
            log.warning(
                "stage %s: lease lost before commit on %d fragment(s) (%s): another worker owns "
                "them now; nothing committed for them",
                self.stage,
                len(lost),
                ", ".join(t.ref.key for t in lost[:5]),
            )

    def _owned(self, t: FragmentTask) -> bool:
        if self.leases is None or t.lease is None:
            return True
        try:
            return self.leases.valid(t.lease)
        except Exception as e:  # noqa: BLE001 - an unreachable store confirms nothing
            log.warning("cannot confirm the lease of %s (%s): not committing it", t.ref.key, e)
            return False
