"""Nearest-neighbour queries through LanceDB on the lake's own table (cosine, always).

One place builds every vector query, so the metric and the index's tuned parameters are
the same for `sila search`, `lake.search`, the recall check and the benchmark.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pyarrow as pa
from sila.retrieval.index import METRIC, IndexPlan


@cache
def _connect(uri: str, opts: tuple):
    import lancedb

    return lancedb.connect(uri, storage_options=dict(opts) or None)


def open_lancedb_table(lake, table: str):
    """The LanceDB handle of a lake table (the same files pylance writes; fresh each call)."""
    db = _connect(lake.uri, tuple(sorted(lake.storage_options.items())))
    return db.open_table(table)


def knn(
    tbl,
    column: str,
    vector: np.ndarray,
    k: int,
    plan: IndexPlan | None,
    *,
    where: str | None = None,
    columns: list[str] | None = None,
    exact: bool = False,
) -> pa.Table:
    """The `k` nearest rows to `vector` (a `_distance` column: cosine distance, 1 - cos).

    `plan` None or `exact`: a flat scan (`bypass_vector_index`). `where` is applied before
    ranking (a prefilter), so k results come back whenever k rows match.
    """
    q = (
        tbl.search(np.asarray(vector, np.float32), vector_column_name=column)
        .distance_type(METRIC)
        .limit(k)
    )
    if exact or plan is None:
        q = q.bypass_vector_index()
    else:
        q = q.nprobes(plan.nprobes)
        if plan.refine_factor:
            q = q.refine_factor(plan.refine_factor)
        if plan.ef:
            q = q.ef(plan.ef)
    if where:
        q = q.where(where, prefilter=True)
    if columns is not None:
        q = q.select(columns)
    return q.to_arrow()


def plan_for_filter(tbl, plan: IndexPlan | None, where: str | None) -> IndexPlan | None:
    """The plan for a query with a prefilter: nprobes scaled by 1 / the matching fraction.

    With a selective prefilter the probed IVF partitions hold few matching rows (at 1%
    selectivity, nprobes 10 of 100+ partitions yields about one candidate per partition), so
    recall collapses. Probing 1/fraction times more partitions keeps the expected number of
    matching candidates the same; the refine step still re-ranks them on the raw vectors.
    """
    if plan is None or not where:
        return plan
    from dataclasses import replace

    total = tbl.count_rows()
    frac = tbl.count_rows(where) / total if total else 1.0
    parts = max(1, plan.num_partitions)
    nprobes = min(parts, math.ceil(plan.nprobes / max(frac, 1.0 / parts)))
    return replace(plan, nprobes=nprobes)


def recall_at(found: list[list[str]], truth: list[list[str]], k: int = 10) -> float:
    """Mean fraction of the exact top-k found by the indexed query."""
    if not truth:
        return 1.0
    hits = [
        len(set(f[:k]) & set(t[:k])) / max(1, min(k, len(t)))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))
