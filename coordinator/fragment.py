"""One fragment's work for a stage: which rows, whose values to keep, what to record.

`plan_rows` turns what discovery found (pending, partial, stale, reopened) and the run's options
(`--where`, `--retry-errors`) into the rows to compute, the rows already computed whose values
are kept, and whether the fragment is complete afterwards. `finish_values` lays the computed
segments over the kept values into one data file's worth of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import lance
import numpy as np
import pyarrow as pa
from sila.coordinator.inputs import Selection, combine_where, physical_values, scatter, select_rows
from sila.coordinator.state import PARTIAL, FragmentWork, StageRecords

from sila.errors import ContractError


@dataclass
class RowPlan:
    selection: Selection  # rows to compute now
    keep_values: bool  # merge over the fragment's current values (else nulls elsewhere)
    computed: np.ndarray | None  # rows computed once this fragment commits (None: not tracked)
    complete: bool  # every row matching the stage's own `where` is then computed or errored


def matching_offsets(ds: lance.LanceDataset, fragment_id: int, where: str | None, n: int):
    if not where:
        return np.arange(n, dtype=np.uint32)
    try:
        tbl = ds.get_fragment(fragment_id).to_table(columns=[], filter=where, with_row_address=True)
    except (ValueError, OSError, RuntimeError) as e:
        raise ContractError(f"cannot apply where {where!r}: {e}") from e
    return np.sort((tbl.column("_rowaddr").to_numpy() & 0xFFFFFFFF).astype(np.uint32))


def plan_rows(
    ds: lance.LanceDataset,
    stage_cls,
    work: FragmentWork,
    records: StageRecords,
    run_where: str | None,
    retry_errors: bool,
    fresh: bool = False,
) -> RowPlan:
    """`fresh`: compute from scratch whatever the records say (columns about to be reset)."""
    ref = work.ref
    n = ref.physical_rows
    tracked = bool(stage_cls.where or run_where)  # else "complete" means every row
    if retry_errors and not fresh:
        where = combine_where(stage_cls.where, run_where, f"{stage_cls.error_column()} IS NOT NULL")
        sel = select_rows(ds, stage_cls, ref.id, where)
        prev = records.computed(work.record, n) if work.record else None
        complete = work.record.complete if work.record else True
        return RowPlan(sel, True, prev, complete)
    where = combine_where(stage_cls.where, run_where)
    sel = select_rows(ds, stage_cls, ref.id, where)
    prev = None
    if work.status == PARTIAL and not fresh and work.record is not None:
        prev = records.computed(work.record, n)
        if prev is not None and len(prev):  # keep what was computed, compute only the rest
            sel = _without(sel, prev)
    keep = work.status == PARTIAL and not fresh
    done = sel.offsets if prev is None else np.union1d(prev, sel.offsets).astype(np.uint32)
    if run_where:  # a subset: complete only if it happened to cover every eligible row
        eligible = matching_offsets(ds, ref.id, stage_cls.where, n)
        complete = bool(np.isin(eligible, done).all())
    else:
        complete = True
    return RowPlan(sel, keep, done if (tracked or not complete) else None, complete)


def _without(sel: Selection, offsets: np.ndarray) -> Selection:
    keep = ~np.isin(sel.offsets, offsets)
    if keep.all():
        return sel
    idx = np.flatnonzero(keep)
    return Selection(sel.offsets[idx], sel.table.take(pa.array(idx)))


def finish_values(
    ds: lance.LanceDataset, stage_cls, ref, plan: RowPlan, values: pa.Table
) -> pa.Table:
    schema = pa.schema(stage_cls.output_fields())
    base = physical_values(ds, ref.id, schema, ref.physical_rows) if plan.keep_values else None
    return scatter(ref.physical_rows, plan.selection.offsets, values, base)
