"""Vector search quality and speed on N x D clustered unit vectors in a SILA table.

`python -m bench search [--rows 1000000] [--dim 512] [--queries 200]`

Builds the index SILA chooses (`sila index build`: type and parameters from width and rows,
query parameters tuned to recall@10 >= 0.95 on a sample) and, in the same run on a copy of the
table, LanceDB's defaults (`create_index(metric="cosine")`, nprobes 20, as in the issue).
Reports recall@10 vs exact, p50/p99 latency without and with a prefilter (10% and 1% of
rows), build time and index size. Queries are held out (not rows of the table).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa

from bench._util import report


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 0.35) -> np.ndarray:
    """Unit vectors around `clusters` random centres (angular spread ~ `spread` rad)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        c = rng.integers(0, clusters, b - a)
        x = centres[c] + rng.standard_normal((b - a, dim)).astype(np.float32) * (
            spread / np.sqrt(dim)
        )
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def write_table(lake, vecs: np.ndarray, frag_rows: int = 100_000) -> None:
    import lance

    n, dim = vecs.shape

    def batches():
        for a in range(0, n, frag_rows):
            b = min(n, a + frag_rows)
            yield pa.record_batch(
                {
                    "id": pa.array([f"c{i}" for i in range(a, b)]),
                    "bucket": pa.array(np.arange(a, b) % 100, pa.int32()),
                    "embedding": pa.FixedSizeListArray.from_arrays(
                        pa.array(vecs[a:b].ravel()), dim
                    ),
                }
            )

    schema = pa.schema(
        [("id", pa.string()), ("bucket", pa.int32()), ("embedding", pa.list_(pa.float32(), dim))]
    )
    lance.write_dataset(
        pa.RecordBatchReader.from_batches(schema, batches()),
        lake.table_uri("clips"),
        max_rows_per_file=frag_rows,
    )


def run_queries(tbl, plan, queries, truth, k=10, where=None, sila_rules=True):
    from sila.retrieval.query import knn, plan_for_filter, recall_at

    found, times = [], []
    if sila_rules:  # what `sila search` does: more partitions probed for a selective filter
        plan = plan_for_filter(tbl, plan, where)
    for q in queries:
        t0 = time.perf_counter()
        res = knn(tbl, "embedding", q, k, plan, where=where, columns=["id"])
        times.append((time.perf_counter() - t0) * 1000)
        found.append(res.column("id").to_pylist())
    return (
        recall_at(found, truth, k),
        float(np.percentile(times, 50)),
        float(np.percentile(times, 99)),
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench search")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--skip-defaults", action="store_true", help="do not build LanceDB's defaults")
    args = ap.parse_args(argv)

    from sila.retrieval.index import IndexPlan
    from sila.retrieval.maintain import build_index, exact_topk
    from sila.retrieval.query import knn, open_lancedb_table

    import sila

    work = args.dir or tempfile.mkdtemp(prefix="sila-bench-search-")
    lake = sila.Lake(os.path.join(work, "lake")).init()
    t0 = time.perf_counter()
    vecs = clustered(args.rows + args.queries, args.dim, args.clusters, seed=7)
    data, queries = vecs[: args.rows], vecs[args.rows :]
    write_table(lake, data)
    del vecs, data
    print(
        f"# {args.rows} x {args.dim} vectors, {args.clusters} clusters, {args.queries} held-out queries; "
        f"written in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs",
        flush=True,
    )

    ds = lake.table("clips")
    truths = {}
    for label, where in (("all", None), ("where10", "bucket < 10"), ("where1", "bucket < 1")):
        t0 = time.perf_counter()
        truths[label] = (where, exact_topk(ds, "embedding", queries, 10, where))
        print(
            f"# exact truth ({label}) by one streaming scan: {time.perf_counter() - t0:.1f} s",
            flush=True,
        )

    # the exact scan agrees with LanceDB's bypass_vector_index() (a few queries: each is a full scan)
    tbl = open_lancedb_table(lake, "clips")
    t0 = time.perf_counter()
    flat = [
        knn(tbl, "embedding", q, 10, None, columns=["id"]).column("id").to_pylist()
        for q in queries[:5]
    ]
    flat_ms = (time.perf_counter() - t0) / 5 * 1000
    agree = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(flat, truths["all"][1][:5], strict=True)]
    )
    print(
        f"# bypass_vector_index() vs streaming exact: agreement {agree:.3f}; flat query p50 ~{flat_ms:.0f} ms",
        flush=True,
    )

    rec = build_index(lake, "clips", "embedding")
    print(
        f"# SILA chose {rec.plan.index_type} partitions={rec.plan.num_partitions} "
        f"nprobes={rec.plan.nprobes} refine={rec.plan.refine_factor} ef={rec.plan.ef}; "
        f"build {rec.build_s} s, size {rec.size_bytes / 2**20:.1f} MiB; tuning {rec.tuning}",
        flush=True,
    )
    tbl = open_lancedb_table(lake, "clips")
    ours = {
        label: run_queries(tbl, rec.plan, queries, truth, where=w)
        for label, (w, truth) in truths.items()
    }

    ref = None
    if not args.skip_defaults:
        ref_dir = os.path.join(work, "ref")
        shutil.copytree(
            lake.table_uri("clips"),
            os.path.join(ref_dir, "clips.lance"),
            ignore=shutil.ignore_patterns("_indices"),
        )
        import lance
        import lancedb

        rds = lance.dataset(os.path.join(ref_dir, "clips.lance"))
        for idx in rds.list_indices():
            rds.drop_index(idx["name"])
        rtbl = lancedb.connect(ref_dir).open_table("clips")
        t0 = time.perf_counter()
        rtbl.create_index(metric="cosine", vector_column_name="embedding")
        ref_build = time.perf_counter() - t0
        rtbl = lancedb.connect(ref_dir).open_table("clips")
        ref_plan = IndexPlan("default", 0, nprobes=20)
        ref = {
            label: run_queries(rtbl, ref_plan, queries, truth, where=w, sila_rules=False)
            for label, (w, truth) in truths.items()
        }
        report(
            "search_build_s",
            rec.build_s,
            ref_build,
            "s",
            "ours = SILA's choice incl. no tuning; ref = LanceDB defaults",
        )

    for label in truths:
        r, p50, p99 = ours[label]
        rr, rp50, rp99 = ref[label] if ref else (float("nan"),) * 3
        report(
            f"search_recall10_{label}",
            r,
            rr,
            "",
            "target >= 0.95; ref = LanceDB defaults, nprobes 20",
        )
        report(f"search_p50_ms_{label}", p50, rp50, "ms", "target <= 20 ms")
        report(f"search_p99_ms_{label}", p99, rp99, "ms")
    report(
        "search_index_MiB",
        rec.size_bytes / 2**20,
        os.path.getsize(lake.table_uri("clips")) if False else args.rows * args.dim * 4 / 2**20,
        "MiB",
        "ref = raw float32 vectors",
    )
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0
