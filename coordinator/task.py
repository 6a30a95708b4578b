"""One fragment's task, the single value a fragment worker carries from claim to commit.

claim (claims.py) fills `lease`; compute (segments.py) fills `rows` and `results`; finish
(worker.py) writes `data_file`; the committer (commit.py) commits it or says why not. A task
that holds results but no data file yet is *unwritten*: computed while a new stage version is
still being judged, its file is written (and the columns reset) only once the code proves good.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lance
from sila.coordinator.fragment import RowPlan
from sila.coordinator.leases import Lease
from sila.coordinator.state import FragmentRef, FragmentWork
from sila.coordinator.steps import SegmentResult


@dataclass
class FragmentTask:
    """A fragment on its way to a commit."""

    work: FragmentWork  # what discovery saw: status, the stage's data file, its record, hashes
    ds: lance.LanceDataset  # the snapshot it was listed from: every read of its rows uses it
    lease: Lease | None = None
    rows: RowPlan | None = None  # which rows are computed, which values kept
    results: list[SegmentResult] = field(default_factory=list)  # one per segment, in order
    data_file: lance.fragment.DataFile | None = None  # written, not yet committed
    # Commit even though the fragment is done already (retry-errors replaces its file) instead
    # of re-checking whether someone else finished it meanwhile.
    replace: bool = False
    errors: int = 0  # rows whose error column is set in the written file

    @property
    def ref(self) -> FragmentRef:
        """The fragment's id and key (leases and checkpoints are keyed by it)."""
        return self.work.ref

    @property
    def computed_rows(self) -> int:
        """Rows computed for this task (0 before compute)."""
        return len(self.rows.selection.offsets) if self.rows is not None else 0

    @property
    def written(self) -> bool:
        """Its data file exists: ready for the committer."""
        return self.data_file is not None
