"""Per-fragment data files and coalesced DataReplacement commits.

Each finished fragment becomes ONE new data file holding all of a stage's fields; finished
fragments are grouped into one commit (LANCE_NOTES 10) and each lands whole, exactly once.
A conflict is re-checked against the manifest: fragments someone else finished are skipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import lance
import pyarrow as pa
from lance import LanceOperation
from lance.commit import CommitConflictError
from sila.coordinator.discovery import FragmentRef, is_done
from sila.coordinator.leases import Lease, LeaseStore

from sila.errors import LakeError
from sila.lake import Lake

log = logging.getLogger(__name__)


@dataclass
class Finished:
    ref: FragmentRef
    data_file: object  # lance.fragment.DataFile
    lease: Lease | None
    rows: int
    errors: int
    replace: bool = False  # retry-errors: the fragment is done already, replace its file


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
    """Groups finished fragments; `flush` commits them in one DataReplacement."""

    def __init__(
        self,
        lake: Lake,
        table: str,
        stage: str,
        leases: LeaseStore | None,
        max_batch: int = 64,
        max_wait_s: float = 2.0,
        on_commit=None,
    ) -> None:
        self.lake, self.table, self.stage, self.leases = lake, table, stage, leases
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.pending: list[Finished] = []
        self.oldest = 0.0
        # callback(committed, skipped: someone else finished them, lost: our lease went first)
        self.on_commit = on_commit

    def add(self, fin: Finished) -> None:
        if not self.pending:
            self.oldest = time.monotonic()
        self.pending.append(fin)
        if len(self.pending) >= self.max_batch or time.monotonic() - self.oldest >= self.max_wait_s:
            self.flush()

    def due(self) -> bool:
        return bool(self.pending) and time.monotonic() - self.oldest >= self.max_wait_s

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        skipped: list[Finished] = []
        lost: list[Finished] = []
        from sila.coordinator.faults import fault_point

        for attempt in range(30):
            ds = self.lake.table(self.table)
            todo = [f for f in batch if f.replace or not is_done(ds, self.stage, f.ref.id)]
            skipped += [f for f in batch if f not in todo]
            fault_point("during_commit")
            # Fencing, right before every attempt (a retry may come long after the first one, or
            # the process may have been paused): never commit a fragment whose lease we lost.
            owned = [f for f in todo if self._owned(f)]
            lost += [f for f in todo if f not in owned]
            batch = owned
            if not batch:
                break
            groups = [LanceOperation.DataReplacementGroup(f.ref.id, f.data_file) for f in batch]
            try:
                lance.LanceDataset.commit(
                    ds.uri,
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
                f"could not commit {len(batch)} fragment(s) of stage '{self.stage}' after 30 attempts"
            )
        if self.leases is not None:
            for f in batch:
                if f.lease is not None:
                    self.leases.release(f.lease, committed=True)
            for f in skipped:
                if f.lease is not None:
                    self.leases.release(f.lease)
        if lost:
            log.warning(
                "stage %s: lease lost before commit on %d fragment(s) (%s): another worker owns "
                "them now; nothing committed for them",
                self.stage,
                len(lost),
                ", ".join(f.ref.key for f in lost[:5]),
            )
        if self.on_commit:
            self.on_commit(batch, skipped, lost)

    def _owned(self, f: Finished) -> bool:
        if self.leases is None or f.lease is None:
            return True
        try:
            return self.leases.valid(f.lease)
        except Exception as e:  # noqa: BLE001 - an unreachable store confirms nothing
            log.warning("cannot confirm the lease of %s (%s): not committing it", f.ref.key, e)
            return False
