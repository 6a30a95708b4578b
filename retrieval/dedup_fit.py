"""The streamed SemDeDup fit: bounded memory, and exact under arrival for fixed centroids.

A fit never holds the table's N x D vectors. It scans the table (one pinned version, so every
scan sees the rows in the same order) a few times:

1. `sample_vectors`: a seeded sample of `sample_rows` vectors, for k-means;
2. `scan_rows`: per row its id, quality and cluster (the nearest centroid; for a row an earlier
   fit already assigned, that fit's cluster) plus what the table already holds for it;
3. `spill_clusters`: the vectors of the clusters to (re)group, written cluster by cluster to a
   local scratch file;
4. `group_clusters`: each such cluster read back alone and grouped (`group_members`, blockwise).

Peak memory is about  sample_rows x D x 4 x 2 (k-means)  +  N x ~100 bytes (ids, clusters,
answers)  +  the scan's batches in flight (batch_rows x D x 4 x ~8, plus Lance's fixed I/O
overhead)  +  the largest cluster x D x 4 x 2, instead of N x D x 8. Measured (bench dedup,
1M x 512, 100k sample, 1,000 clusters): the fit peaks 1.06 GB above the imports (the vectors
alone are 2 GB, read and normalised 3.9 GB); an update after 10k arrivals 1.27 GB (its per-row
Python objects are most of the N term). Scratch disk: the regrouped rows x D x 4.

Regrouping a whole cluster whenever a row arrives in it (or leaves it) makes the answer the
one a fit over all rows with the same centroids gives, whatever the order rows arrived in.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sila.retrieval.semdedup import (
    SWEEP_EPS,
    group_members,
    nearest_centroid,
    normalize,
    visiting_order,
)


@dataclass
class VectorSource:
    """One pinned table version's rows that have a vector, scanned in a fixed order."""

    ds: object  # lance.LanceDataset
    column: str
    quality: str | None = None
    batch_rows: int = 4096  # the scan holds a few batches: its memory follows this, not N

    def count(self) -> int:
        """Rows with a vector."""
        return int(self.ds.count_rows(filter=f"{self.column} IS NOT NULL"))

    def batches(
        self, extra: tuple[str, ...] = (), vectors: bool = True
    ) -> Iterator[pa.RecordBatch]:
        """The rows in scan order: id, quality, the vector (unless `vectors` is False), `extra`."""
        cols = ["id"] + ([self.quality] if self.quality else [])
        cols += ([self.column] if vectors else []) + [c for c in extra if c not in cols]
        # scan_in_order: every scan of one version yields the rows in the same order (positions
        # are the fit's row keys); small readahead and I/O buffer: what the scan holds is bounded
        yield from self.ds.to_batches(
            columns=cols,
            filter=f"{self.column} IS NOT NULL",
            batch_size=self.batch_rows,
            batch_readahead=2,
            fragment_readahead=1,
            io_buffer_size=64 * 2**20,
            scan_in_order=True,
        )

    def vectors(self, b: pa.RecordBatch) -> np.ndarray:
        """The batch's vectors as unit float32 rows."""
        col = b.column(self.column)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        dim = col.type.list_size
        return normalize(col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim))


def sample_vectors(src: VectorSource, n: int, n_sample: int, seed: int) -> np.ndarray:
    """A seeded sample of `n_sample` of the `n` rows' unit vectors (positions in scan order)."""
    rng = np.random.default_rng(seed)
    want = np.sort(rng.choice(n, min(n, n_sample), replace=False))
    parts, at = [], 0
    for b in src.batches():
        lo, hi = np.searchsorted(want, [at, at + b.num_rows])
        if hi > lo:
            parts.append(src.vectors(b)[want[lo:hi] - at])
        at += b.num_rows
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


@dataclass
class Rows:
    """Every row with a vector, in scan order (what a fit knows without holding vectors)."""

    ids: np.ndarray  # object (str)
    quality: np.ndarray | None  # float64, nan = missing
    cluster: np.ndarray  # int32
    arrived: np.ndarray  # bool: not in the previous fit's answers
    stored: dict[str, np.ndarray]  # what the table holds now: group (object), keep, error


def scan_rows(
    src: VectorSource,
    centroids: np.ndarray,
    prev: pa.Table | None = None,
    outputs: dict[str, str] | None = None,
) -> Rows:
    """Ids, quality and cluster of every row; rows `prev` (a fit's answers: id, cluster) knows
    keep their cluster, others go to the nearest centroid. `outputs` ({"group": column, ...})
    names the stage's columns to read back, to tell which stored answers a new fit changes."""
    outputs = {k: v for k, v in (outputs or {}).items() if v in src.ds.schema.names}
    prev_ids = prev.column("id").combine_chunks() if prev is not None else None
    prev_cl = prev.column("cluster").to_numpy() if prev is not None else None
    ids, qual, cl, arr = [], [], [], []
    stored: dict[str, list] = {k: [] for k in outputs}
    for b in src.batches(extra=tuple(outputs.values())):
        bid = b.column("id")
        ids.append(np.asarray(bid.to_pylist(), dtype=object))
        if src.quality:
            qual.append(b.column(src.quality).cast(pa.float64()).fill_null(np.nan).to_numpy())
        c = np.zeros(b.num_rows, np.int32)
        new = np.ones(b.num_rows, bool)
        if prev_ids is not None:
            pos = pc.index_in(bid, value_set=prev_ids).fill_null(-1).to_numpy()
            new = pos < 0
            c[~new] = prev_cl[pos[~new]]
        if new.any():
            c[new] = nearest_centroid(centroids, src.vectors(b.filter(pa.array(new))))
        cl.append(c)
        arr.append(new)
        for k, col in outputs.items():
            stored[k].append(np.asarray(b.column(col).to_pylist(), dtype=object))
    cat = lambda xs, t: np.concatenate(xs) if xs else np.zeros(0, t)  # noqa: E731
    return Rows(
        cat(ids, object),
        cat(qual, np.float64) if src.quality else None,
        cat(cl, np.int32),
        cat(arr, bool),
        {k: cat(v, object) for k, v in stored.items()},
    )


@dataclass
class Spill:
    """Vectors of the clusters to group, cluster after cluster, in a local scratch file."""

    path: str
    dim: int
    order: np.ndarray  # scan positions of the spilled rows, sorted by cluster (stable)
    starts: dict[int, tuple[int, int]]  # cluster -> (first slot, rows)

    def read(self, c: int) -> np.ndarray:
        """The cluster's vectors (pread: no mapping of the file, so nothing of it stays resident)."""
        first, n = self.starts[c]
        width = self.dim * 4
        with open(self.path, "rb") as f:
            raw = os.pread(f.fileno(), n * width, first * width)
        return np.frombuffer(raw, np.float32).reshape(n, self.dim)


def spill_clusters(src: VectorSource, rows: Rows, todo: np.ndarray, path: str) -> Spill:
    """Write the vectors of the rows in clusters `todo` to `path`, grouped by cluster."""
    mask = np.isin(rows.cluster, todo)
    order = np.flatnonzero(mask)
    order = order[np.argsort(rows.cluster[order], kind="stable")]
    slot = np.empty(len(rows.ids), np.int64)
    slot[order] = np.arange(len(order))
    cs, first, counts = np.unique(rows.cluster[order], return_index=True, return_counts=True)
    starts = {int(c): (int(f), int(n)) for c, f, n in zip(cs, first, counts, strict=True)}
    dim, at = 0, 0
    with open(path, "wb") as f:
        for b in src.batches():
            sel = np.flatnonzero(mask[at : at + b.num_rows])
            if len(sel):
                v = src.vectors(b.take(pa.array(sel)))
                dim = v.shape[1]
                slots = slot[at + sel]
                by_slot = np.argsort(slots)  # a batch's rows of one cluster: consecutive slots
                slots, v = slots[by_slot], v[by_slot]
                cuts = np.flatnonzero(np.diff(slots) != 1) + 1
                for a, z in zip(np.r_[0, cuts], np.r_[cuts, len(slots)], strict=True):
                    os.pwrite(f.fileno(), v[a:z].tobytes(), int(slots[a]) * dim * 4)
            at += b.num_rows
    return Spill(path, dim, order, starts)


@dataclass
class Groups:
    """Answers for the regrouped rows (arrays over scan positions; -1 / nan elsewhere)."""

    rep: np.ndarray  # int64: scan position of the row's representative
    similarity: np.ndarray  # float32
    sweep: dict[int, np.ndarray]  # cluster -> removed rows per SWEEP_EPS


def group_clusters(spill: Spill, rows: Rows, eps: float) -> Groups:
    """Group each spilled cluster alone: best first (quality, then id), star groups."""
    n = len(rows.ids)
    rep = np.full(n, -1, np.int64)
    sim = np.full(n, np.nan, np.float32)
    sweep: dict[int, np.ndarray] = {}
    for c, (first, count) in spill.starts.items():
        members = spill.order[first : first + count]
        q = rows.quality[members] if rows.quality is not None else None
        g = group_members(spill.read(c), visiting_order(rows.ids[members], q), eps)
        rep[members] = members[g.rep]
        sim[members] = g.similarity
        sweep[c] = np.array([int((g.earlier_max >= 1.0 - e).sum()) for e in SWEEP_EPS], np.int64)
    return Groups(rep, sim, sweep)


def regroup(src: VectorSource, rows: Rows, todo: np.ndarray, eps: float) -> Groups:
    """Spill the clusters `todo` to a scratch file and group them (the file is removed)."""
    with tempfile.TemporaryDirectory(prefix="sila-dedup-") as tmp:
        spill = spill_clusters(src, rows, todo, os.path.join(tmp, "vectors.f32"))
        return group_clusters(spill, rows, eps)
