"""dedup: a global stage (fit on a seeded sample, stored and versioned; per-fragment assign),
known duplicate groups, representatives by quality then id, later rows assigned against the
stored fit without displacing anyone, refit on --recompute and on a changed setting."""

from __future__ import annotations

import lance
import numpy as np
import pyarrow as pa
import pytest

from sila.global_stage import FitStore
from sila.schema import owned

DIM = 32


def _vectors(groups: int, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((4, DIM)) * 3  # four well-separated topics (k-means finds them)
    base = topics[np.arange(groups) % 4] + rng.standard_normal((groups, DIM))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    v = np.repeat(base, copies, axis=0) + rng.standard_normal((groups * copies, DIM)) * 0.01
    return v / np.linalg.norm(v, axis=1, keepdims=True), np.repeat(np.arange(groups), copies)


def _rows(start: int, vecs: np.ndarray, truth: np.ndarray, quality: list[float]) -> pa.Table:
    emb = owned(
        [pa.field("embedding", pa.list_(pa.float32(), DIM)), pa.field("embed_error", pa.string())],
        "embed",
        "1",
    )
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("truth", pa.int64()),
            pa.field("quality", pa.float64()),
            *emb,
        ]
    )
    n = len(vecs)
    return pa.table(
        [pa.array([f"c{start + i:04d}" for i in range(n)]), pa.array(truth), pa.array(quality),
         pa.FixedSizeListArray.from_arrays(pa.array(vecs.astype(np.float32).ravel()), DIM),
         pa.nulls(n, pa.string())],
        schema=schema,
    )  # fmt: skip


@pytest.fixture
def vec_lake(lake):
    vecs, truth = _vectors(groups=40, copies=3, seed=0)
    quality = [float(i % 3) for i in range(len(vecs))]  # the third copy of each group is best
    quality[3 * 5 + 1] = quality[3 * 5 + 2] = 2.0  # group 5: a tie, broken by id
    lance.write_dataset(
        _rows(0, vecs, truth, quality), lake.table_uri("clips"), max_rows_per_file=30
    )
    return lake


def _table(lake):
    cols = [
        "id",
        "truth",
        "quality",
        "dedup_cluster",
        "dedup_group",
        "dedup_keep",
        "dedup_of",
        "dedup_similarity",
    ]
    return {r["id"]: r for r in lake.table("clips").to_table(columns=cols).to_pylist()}


def test_groups_representatives_and_later_rows(vec_lake):
    lake = vec_lake
    settings = {"eps": 0.02, "quality": "quality", "clusters": 4, "sample_rows": 60}
    job = lake.run("dedup", settings=settings)
    assert job["state"] == "succeeded" and job["progress"]["fragments_done"] == 4
    fit = FitStore(lake, "clips", "dedup").current()
    assert fit.summary["rows"] == 120 and fit.summary["sample_rows"] == 60
    assert fit.summary["kept"] == 40 and fit.summary["removed"] == 80
    removed = [s["removed"] for s in fit.summary["sweep"]]
    assert removed == sorted(removed)  # a larger eps never removes fewer
    rows = _table(lake)
    by_truth: dict[int, list[dict]] = {}
    for r in rows.values():
        by_truth.setdefault(r["truth"], []).append(r)
    for t, members in by_truth.items():
        kept = [m for m in members if m["dedup_keep"]]
        assert len(kept) == 1, (t, members)
        best = max(m["quality"] for m in members)
        expect = min(m["id"] for m in members if m["quality"] == best)  # ties by id
        assert kept[0]["id"] == expect
        for m in members:
            assert m["dedup_group"] == expect
            assert m["dedup_of"] == (None if m["dedup_keep"] else expect)
            assert m["dedup_similarity"] >= 1 - 0.02
        assert len({m["dedup_cluster"] for m in members}) == 1
    assert (
        lake.table("clips").schema.field("dedup_keep").metadata[b"sila.fit"].decode() == fit.fit_id
    )

    # a later ingest: near-copies of existing groups (one better than its representative),
    # and a new original. Assigned against the stored fit: nobody is displaced.
    vecs, _ = _vectors(groups=40, copies=3, seed=0)
    rng = np.random.default_rng(5)
    new = np.stack([vecs[0] + rng.standard_normal(DIM) * 0.01, rng.standard_normal(DIM)])
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    lance.write_dataset(
        _rows(1000, new, np.array([0, 99]), [9.0, 1.0]), lake.table_uri("clips"), mode="append"
    )
    before = {k: v for k, v in rows.items()}
    job = lake.run("dedup", settings=settings)
    assert job["progress"]["fragments_done"] == 1  # only the new fragment
    assert FitStore(lake, "clips", "dedup").current().fit_id == fit.fit_id
    rows = _table(lake)
    rep0 = next(r["id"] for r in before.values() if r["truth"] == 0 and r["dedup_keep"])
    assert rows["c1000"]["dedup_keep"] is False and rows["c1000"]["dedup_of"] == rep0
    assert rows["c1001"]["dedup_keep"] is True and rows["c1001"]["dedup_group"] == "c1001"
    assert all(rows[k] == v for k, v in before.items())

    # --recompute refits: the better new copy now represents its group
    lake.run("dedup", settings=settings, recompute=True)
    refit = FitStore(lake, "clips", "dedup").current()
    assert refit.fit_id != fit.fit_id and refit.summary["rows"] == 122
    rows = _table(lake)
    assert rows["c1000"]["dedup_keep"] is True and rows[rep0]["dedup_of"] == "c1000"

    # a changed setting is a new fit as well; a looser eps merges nothing new here
    lake.run("dedup", settings={**settings, "eps": 0.03})
    assert FitStore(lake, "clips", "dedup").current().fit_id != refit.fit_id
    assert sum(r["dedup_keep"] for r in _table(lake).values()) == 41


def test_missing_vectors_and_quality_column_are_named(vec_lake):
    from sila.errors import SilaError

    with pytest.raises(SilaError, match="quality column 'sharpness'"):
        vec_lake.run("dedup", settings={"quality": "sharpness"})
