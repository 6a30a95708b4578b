"""dedup: a global stage (fit streamed on a seeded sample, stored and versioned; per-fragment
lookup), known duplicate groups, representatives by quality then id; rows that arrive later
are decided together by the next fit step, exactly as one fit over all rows would (near-copies
in two new fragments: one kept; any arrival order: the same groups); refit on --recompute and
on a changed setting."""

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


def _rows(
    start: int, vecs: np.ndarray, truth: np.ndarray, quality: list[float], vec: str = "embedding"
) -> pa.Table:
    writer = {"embedding": "embed", "fingerprint_vec": "fingerprint"}[vec]
    emb = owned(
        [pa.field(vec, pa.list_(pa.float32(), DIM)), pa.field(f"{writer}_error", pa.string())],
        writer,
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
        [pa.array([f"c{start + i:04d}" for i in range(n)] if isinstance(start, int) else start),
         pa.array(truth), pa.array(quality),
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

    # a later ingest: a near-copy of group 0 better than its representative, and a new
    # original. The fit step regroups the clusters they arrive in, as one fit over all rows
    # would: the better copy now represents group 0, so every fragment is looked up again.
    vecs, _ = _vectors(groups=40, copies=3, seed=0)
    rng = np.random.default_rng(5)
    new = np.stack([vecs[0] + rng.standard_normal(DIM) * 0.01, rng.standard_normal(DIM)])
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    lance.write_dataset(
        _rows(1000, new, np.array([0, 99]), [9.0, 1.0]), lake.table_uri("clips"), mode="append"
    )
    before = {k: v for k, v in rows.items()}
    job = lake.run("dedup", settings=settings)
    assert job["state"] == "succeeded" and job["progress"]["fragments_done"] == 5
    update = FitStore(lake, "clips", "dedup").current()
    assert update.fit_id != fit.fit_id and update.summary["arrived"] == 2
    assert update.summary["changed_rows"] == 3 and update.summary["lineage"] is None
    rows = _table(lake)
    rep0 = next(r["id"] for r in before.values() if r["truth"] == 0 and r["dedup_keep"])
    assert rows["c1000"]["dedup_keep"] is True and rows[rep0]["dedup_of"] == "c1000"
    assert rows["c1001"]["dedup_keep"] is True and rows["c1001"]["dedup_group"] == "c1001"
    assert all(rows[k] == v for k, v in before.items() if v["truth"] != 0)

    # a worse copy joins its group without changing any stored answer: only its fragment
    worse = (vecs[3] + rng.standard_normal(DIM) * 0.01)[None]
    lance.write_dataset(
        _rows(1002, worse, np.array([1]), [-1.0]), lake.table_uri("clips"), mode="append"
    )
    job = lake.run("dedup", settings=settings)
    assert job["progress"]["fragments_done"] == 1
    again = FitStore(lake, "clips", "dedup").current()
    assert again.summary["lineage"] == update.fit_id and again.summary["changed_rows"] == 0
    after = _table(lake)
    rep1 = next(r["id"] for r in rows.values() if r["truth"] == 1 and r["dedup_keep"])
    assert after["c1002"]["dedup_keep"] is False and after["c1002"]["dedup_of"] == rep1
    assert all(after[k] == v for k, v in rows.items())
    fit = again

    # `sila dedup report` says what the centroids were trained on and what the update did
    from sila.cli.main import app
    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["dedup", "report", "--lake", lake.uri])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "centroids trained on 60 of 120 rows; +3 rows since" in text
    assert "1 rows arrived, 0 left, 1 clusters regrouped, 0 stored answers changed" in text

    # --recompute refits: the better new copy now represents its group
    lake.run("dedup", settings=settings, recompute=True)
    refit = FitStore(lake, "clips", "dedup").current()
    assert refit.fit_id != fit.fit_id and refit.summary["rows"] == 123
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


def _decisions(lake, stage: str = "dedup") -> dict[str, tuple]:
    cols = ["id", f"{stage}_group", f"{stage}_keep", f"{stage}_of", f"{stage}_error"]
    t = lake.table("clips").to_table(columns=cols).to_pylist()
    return {r["id"]: (r[f"{stage}_group"], r[f"{stage}_keep"], r[f"{stage}_of"]) for r in t}


@pytest.mark.parametrize("stage,vec", [("dedup", "embedding"), ("fpdedup", "fingerprint_vec")])
def test_near_copies_arriving_in_two_fragments_keep_one(lake, stage, vec):
    vecs, truth = _vectors(groups=20, copies=2, seed=1)
    uri = lake.table_uri("clips")
    lance.write_dataset(_rows(0, vecs, truth, [0.0] * 40, vec), uri, max_rows_per_file=20)
    settings = {"eps": 0.02, "clusters": 4}
    lake.run(stage, settings=settings)
    # two near-copies (cosine ~0.999) of a new original, appended as two fragments, and a copy
    # of an existing representative
    rng = np.random.default_rng(9)
    near = rng.standard_normal(DIM) + rng.standard_normal((2, DIM)) * 0.02
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    assert near[0] @ near[1] > 0.999
    for i in range(2):
        lance.write_dataset(_rows(500 + i, near[i : i + 1], np.array([77]), [0.0], vec), uri,
                            mode="append")  # fmt: skip
    copy = vecs[0] + rng.standard_normal(DIM) * 0.005
    lance.write_dataset(_rows(600, (copy / np.linalg.norm(copy))[None], np.array([0]), [0.0], vec),
                        uri, mode="append")  # fmt: skip
    job = lake.run(stage, settings=settings, workers=2)
    assert job["state"] == "succeeded" and job["progress"]["fragments_done"] == 3
    got = _decisions(lake, stage)
    assert got["c0500"] == ("c0500", True, None)
    assert got["c0501"] == ("c0500", False, "c0500")  # the same group, one kept
    assert got["c0600"] == ("c0000", False, "c0000")  # joins the existing representative's group
    assert got["c0000"] == ("c0000", True, None)
    assert sum(k for _, k, _ in got.values()) == 21


def _one_fit(tmp_path, rows: pa.Table, settings: dict) -> dict[str, tuple]:
    import sila

    lake = sila.Lake(str(tmp_path / "one")).init()
    lance.write_dataset(rows, lake.table_uri("clips"), max_rows_per_file=30)
    lake.run("dedup", settings=settings)
    return _decisions(lake)


@pytest.mark.parametrize("order", ["fifths_reversed", "thirds_shuffled", "copy_by_copy"])
def test_arrival_orders_give_the_groups_of_one_fit(tmp_path, order):
    import sila

    vecs, truth = _vectors(groups=24, copies=3, seed=2)
    rng = np.random.default_rng(4)
    quality = rng.integers(0, 4, len(vecs)).astype(float).tolist()  # ties broken by id
    rows = _rows(0, vecs, truth, quality)
    settings = {"eps": 0.02, "quality": "quality", "clusters": 4}
    expect = _one_fit(tmp_path, rows, settings)
    n = len(vecs)
    if order == "fifths_reversed":
        batches = np.array_split(np.arange(n)[::-1], 5)  # cuts groups: copies in two batches
    elif order == "thirds_shuffled":
        batches = np.array_split(np.random.default_rng(7).permutation(n), 3)
    else:  # the first copy of every group, then the second copies, then the third
        batches = [np.arange(n)[c::3] for c in (2, 1, 0)]
    lake = sila.Lake(str(tmp_path / order)).init()
    changed: list[int] = []
    for i, idx in enumerate(batches):
        part = rows.take(pa.array(np.sort(idx)))
        lance.write_dataset(part, lake.table_uri("clips"), mode="append" if i else "create",
                            max_rows_per_file=12)  # fmt: skip
        assert lake.run("dedup", settings=settings)["state"] == "succeeded"
        changed.append(FitStore(lake, "clips", "dedup").current().summary.get("changed_rows", 0))
    assert sum(changed) > 0  # some arrival outranked a stored representative: it took over
    got = _decisions(lake)
    assert got == expect
    assert len({g for g, _, _ in got.values()}) == 24  # one group per original


def test_a_deleted_representative_hands_its_group_on(vec_lake):
    lake = vec_lake
    settings = {"eps": 0.02, "quality": "quality", "clusters": 4}
    lake.run("dedup", settings=settings)
    rows = _table(lake)
    members = sorted((r for r in rows.values() if r["truth"] == 7), key=lambda r: r["id"])
    rep = next(r["id"] for r in members if r["dedup_keep"])
    lake.table("clips").delete(f"id = '{rep}'")
    job = lake.run("dedup", settings=settings)  # no --recompute: the fit step regroups
    assert job["state"] == "succeeded"
    fit = FitStore(lake, "clips", "dedup").current()
    assert fit.summary["left"] == 1 and fit.summary["rows"] == 119
    rest = [m["id"] for m in members if m["id"] != rep]
    best = max(rows[i]["quality"] for i in rest)
    heir = min(i for i in rest if rows[i]["quality"] == best)
    after = _table(lake)
    assert after[heir]["dedup_keep"] is True
    assert all(after[i]["dedup_group"] == heir for i in rest)
    assert sum(r["dedup_keep"] for r in after.values()) == 40


def test_the_assign_pass_looks_up_and_names_a_row_the_fit_never_saw(vec_lake):
    from sila.stages.dedup import Dedup

    from sila.stage import StageContext

    settings = {"eps": 0.02, "quality": "quality", "clusters": 4}
    vec_lake.run("dedup", settings=settings)
    fit = FitStore(vec_lake, "clips", "dedup").current()
    stage = Dedup(**settings)
    stage.setup(StageContext(vec_lake.uri, fit=fit))
    stored = _table(vec_lake)
    batch = pa.record_batch({"id": pa.array(["c0001", "late", "c0002"])})
    out = stage.compute(batch).to_pylist()
    for r, i in ((out[0], "c0001"), (out[2], "c0002")):
        assert (r["dedup_group"], r["dedup_keep"], r["dedup_of"], r["dedup_error"]) == (
            stored[i]["dedup_group"], stored[i]["dedup_keep"], stored[i]["dedup_of"], None
        )  # fmt: skip
    assert out[1]["dedup_group"] is None and out[1]["dedup_keep"] is None
    assert out[1]["dedup_error"].startswith(f"arrived after fit {fit.fit_id}")
