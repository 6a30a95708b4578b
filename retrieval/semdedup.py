"""SemDeDup: k-means clusters, then near-duplicates by cosine similarity inside each cluster.

Within a cluster, members are visited best first (quality column descending, ties by id);
a member whose cosine similarity to an already chosen representative is >= 1 - eps joins the
most similar one's group, else it becomes a representative itself. Groups are stars around
their representative (no chaining: A~B and B~C never merges A and C unless A~C).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

SWEEP_EPS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


def choose_clusters(n: int, rows_per_cluster: int = 1000) -> int:
    """About `rows_per_cluster` rows per cluster (within-cluster pairs stay ~n x 1000), >= 1."""
    return max(1, min(65536, round(n / rows_per_cluster)))


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def kmeans(sample: np.ndarray, k: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Spherical k-means centroids (faiss) of unit vectors; k is capped by the sample size."""
    import faiss

    k = max(1, min(k, len(sample)))
    if k == 1:
        c = sample.mean(axis=0, keepdims=True)
        return normalize(c)
    km = faiss.Kmeans(sample.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False)
    km.cp.min_points_per_centroid = 1  # small tables: no warning-and-refuse below 39 x k
    km.train(np.ascontiguousarray(sample, np.float32))
    return normalize(km.centroids)


def nearest_centroid(centroids: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of each row's nearest centroid by cosine (faiss inner-product search)."""
    import faiss

    if len(centroids) == 1:
        return np.zeros(len(x), np.int32)
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    _, idx = index.search(np.ascontiguousarray(normalize(x)), 1)
    return idx[:, 0].astype(np.int32)


@dataclass
class GroupResult:
    """Per member, in the order given: representative index (into the members), similarity."""

    rep: np.ndarray  # int: position of the member's representative (itself when kept)
    similarity: np.ndarray  # float32: to the representative; to the nearest other member if kept
    earlier_max: np.ndarray  # float32: max similarity to any better-ranked member (sweep)


def group_members(
    vecs: np.ndarray, order: np.ndarray, eps: float, block: int = 2048
) -> GroupResult:
    """Greedy star grouping of unit vectors visited in `order` (best first).

    Similarities are computed `block` members at a time against all members, so memory is
    block x n floats (never n x n: one large k-means cluster stays bounded)."""
    n = len(vecs)
    rep = np.arange(n)
    sim_out = np.full(n, np.nan, np.float32)
    earlier = np.full(n, -1.0, np.float32)
    if n == 0:
        return GroupResult(rep, sim_out, earlier)
    v = np.ascontiguousarray(vecs[order], np.float32)
    thr = 1.0 - eps
    reps: list[int] = []  # positions (in visiting order) of representatives
    rep_o = np.arange(n)
    nearest = np.full(n, np.nan, np.float32)  # each member's nearest other member
    for a in range(0, n, block):
        s = v[a : a + block] @ v.T
        for r in range(s.shape[0]):
            s[r, a + r] = -np.inf
        if n > 1:
            nearest[a : a + block] = s.max(axis=1)
        for r in range(s.shape[0]):
            j = a + r
            if j:
                earlier[j] = s[r, :j].max()
            if reps and earlier[j] >= thr:
                rs = np.asarray(reps)
                row = s[r, rs]
                best = int(row.argmax())
                if row[best] >= thr:
                    rep_o[j] = rs[best]
                    sim_out[j] = row[best]
                    continue
            reps.append(j)
    for j in reps:  # a representative's similarity: its nearest other member (None if alone)
        sim_out[j] = nearest[j]
    rep[order] = order[rep_o]
    out_sim = np.empty(n, np.float32)
    out_sim[order] = sim_out
    out_earlier = np.empty(n, np.float32)
    out_earlier[order] = earlier
    return GroupResult(rep, out_sim, out_earlier)


def visiting_order(ids: np.ndarray, quality: np.ndarray | None) -> np.ndarray:
    """Best first: quality descending (missing = worst), ties by id ascending."""
    if quality is None:
        return np.argsort(ids, kind="stable")
    q = np.where(np.isnan(quality), -np.inf, quality)
    return np.lexsort((ids, -q))


@dataclass
class DedupAssignment:
    """The fit's answer for every row it saw (arrays aligned with `ids`)."""

    ids: np.ndarray  # object (str)
    cluster: np.ndarray  # int32
    rep_id: np.ndarray  # object (str): the group's representative (= the group's id)
    keep: np.ndarray  # bool
    similarity: np.ndarray  # float32 (nan = alone in its cluster)
    sweep: list[dict]  # per eps: kept / removed (SemDeDup's criterion)


def dedup_all(
    ids: np.ndarray,
    vecs: np.ndarray,
    centroids: np.ndarray,
    eps: float,
    quality: np.ndarray | None = None,
    sweep_eps: tuple[float, ...] = SWEEP_EPS,
) -> DedupAssignment:
    """Assign every row to its nearest centroid and group near-duplicates within clusters."""
    n = len(ids)
    cluster = np.empty(n, np.int32)
    for a in range(0, n, 65536):  # bounded temporaries
        cluster[a : a + 65536] = nearest_centroid(centroids, vecs[a : a + 65536])
    rep_id = np.empty(n, dtype=object)
    keep = np.zeros(n, bool)
    sim = np.full(n, np.nan, np.float32)
    removed_at = np.zeros(len(sweep_eps), np.int64)
    order_all = np.argsort(cluster, kind="stable")
    bounds = np.flatnonzero(np.diff(cluster[order_all])) + 1
    for members in np.split(order_all, bounds):
        if len(members) == 0:
            continue
        q = quality[members] if quality is not None else None
        order = visiting_order(ids[members], q)
        g = group_members(normalize(vecs[members]), order, eps)
        rep_id[members] = ids[members[g.rep]]
        keep[members] = g.rep == np.arange(len(members))
        sim[members] = g.similarity
        for e, value in enumerate(sweep_eps):
            removed_at[e] += int((g.earlier_max >= 1.0 - value).sum())
    sweep = [
        {
            "eps": e,
            "kept": int(n - r),
            "removed": int(r),
            "removed_fraction": round(r / n, 4) if n else 0.0,
        }
        for e, r in zip(sweep_eps, removed_at, strict=True)
    ]
    return DedupAssignment(ids, cluster, rep_id, keep, sim, sweep)


def pairs_exact(vecs: np.ndarray, eps: float, block: int = 4096) -> int:
    """Near-duplicate pairs by exact all-pairs cosine (the reference dedup's cost), blockwise."""
    v = normalize(vecs)
    count = 0
    for a in range(0, len(v), block):
        s = v[a : a + block] @ v.T
        for i in range(s.shape[0]):
            s[i, : a + i + 1] = -1  # upper triangle only
        count += int((s >= 1.0 - eps).sum())
    return count
