"""The vector index on the lake's own table: chosen and tuned to a measured recall, exact
below a trainable size, unindexed rows reported and searched, index-only refresh (no
compaction), stale after the column is recomputed, prefilters honoured, cosine throughout."""

from __future__ import annotations

import lance
import numpy as np
import pyarrow as pa
import pytest
from sila.retrieval.index import MIN_INDEX_ROWS, load_record
from sila.retrieval.maintain import build_index, exact_topk, index_status, refresh_index
from sila.retrieval.query import knn, open_lancedb_table

from bench.search import clustered
from sila.schema import owned

DIM = 32


def _write(lake, vecs: np.ndarray, start: int = 0, mode: str = "create") -> None:
    emb = owned([pa.field("embedding", pa.list_(pa.float32(), DIM))], "embed", "1")
    schema = pa.schema([pa.field("id", pa.string()), pa.field("bucket", pa.int32()), *emb])
    n = len(vecs)
    tbl = pa.table(
        [pa.array([f"c{start + i}" for i in range(n)]), pa.array((np.arange(n) + start) % 10, pa.int32()),
         pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), DIM)],
        schema=schema,
    )  # fmt: skip
    lance.write_dataset(tbl, lake.table_uri("clips"), mode=mode, max_rows_per_file=2000)


@pytest.fixture(scope="module")
def data():
    return clustered(MIN_INDEX_ROWS + 1000 + 600, DIM, clusters=20, seed=3, spread=0.6)


def test_small_tables_search_exactly_and_say_so(lake, data):
    _write(lake, data[:300])
    rec = build_index(lake)
    assert rec.name == "" and rec.plan.index_type == "EXACT"
    res = lake.search(vector=data[5], k=3)
    assert res.exact and res.results[0]["id"] == "c5" and abs(res.results[0]["score"] - 1) < 1e-4
    assert any("exact" in n for n in res.notes)


def test_build_tune_refresh_stale(lake, data):
    n = MIN_INDEX_ROWS + 1000
    _write(lake, data[:n])
    rec = build_index(lake, sample=40)
    assert rec.plan.index_type == "IVF_PQ" and rec.plan.num_sub_vectors == DIM // 8
    assert rec.recall_at_10 >= 0.9 and rec.tuning and rec.recall_sample == 40
    assert load_record(lake, "clips", "embedding").recall_at_10 == rec.recall_at_10
    st = index_status(lake)
    assert st["index"] == rec.name and st["unindexed_rows"] == 0 and not st["stale"]

    # the exact scan used for recall equals LanceDB's bypass_vector_index()
    tbl = open_lancedb_table(lake, "clips")
    q = data[n : n + 3]
    flat = [knn(tbl, "embedding", v, 10, None).column("id").to_pylist() for v in q]
    assert flat == exact_topk(lake.table("clips"), "embedding", q, 10)

    # a prefilter is applied before ranking; scores are cosine similarities
    res = lake.search(vector=q[0], k=5, where="bucket = 3", columns=["bucket"])
    assert len(res.results) == 5 and {r["bucket"] for r in res.results} == {3}
    top = res.results[0]
    row = lake.table("clips").to_table(filter=f"id = '{top['id']}'").column("embedding")[0]
    cos = float(np.dot(np.asarray(row.values.to_numpy()), q[0]) / np.linalg.norm(q[0]))
    assert abs(top["score"] - cos) < 0.02

    # new rows: reported unindexed, still found, then indexed without compaction
    _write(lake, data[n : n + 600], start=n, mode="append")
    st = index_status(lake)
    assert st["unindexed_rows"] == 600
    assert lake.status()["indexes"][0]["unindexed_rows"] == 600  # `sila status` shows it
    res = lake.search(vector=data[n + 10], k=1)
    assert res.results[0]["id"] == f"c{n + 10}" and any("not in the index" in x for x in res.notes)
    frags = [f.fragment_id for f in lake.table("clips").get_fragments()]
    out = refresh_index(lake)
    assert out["refreshed"] and out["unindexed_rows"] == 0
    assert [f.fragment_id for f in lake.table("clips").get_fragments()] == frags

    # the column is recomputed (embed --recompute drops and re-adds it): the index is stale
    ds = lake.table("clips")
    ds.drop_columns(["embedding"])
    lake.table("clips").add_columns(
        owned([pa.field("embedding", pa.list_(pa.float32(), DIM))], "embed", "2")
    )
    st = index_status(lake)
    assert st["stale"] and st["exact"]
    with pytest.raises(Exception, match="stale"):
        refresh_index(lake)
