"""Pending-work discovery from fragment metadata vs. a null scan of the same column (10,000
fragments), and commit throughput: one coalesced DataReplacement vs. one commit per fragment."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("LANCE_LOG", "error")  # before lance loads: the bench's own commits too

import lance  # noqa: E402, I001
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from lance import LanceOperation  # noqa: E402
from sila.coordinator.commit import write_data_file
from sila.coordinator.discovery import pending_fragments

from bench._util import report  # first: sets LANCE_LOG before lance loads
from sila.schema import owned


def build(path: str, fragments: int, rows: int) -> lance.LanceDataset:
    n = fragments * rows
    tbl = pa.table({"id": np.arange(n).astype(str), "x": np.arange(n, dtype=np.float64)})
    ds = lance.write_dataset(tbl, path, max_rows_per_file=rows)
    ds.add_columns(owned([pa.field("y", pa.float64()), pa.field("b_error", pa.string())], "b", "1"))
    return lance.dataset(path)


def state_discovery(d: str, ds: lance.LanceDataset, fragments: int) -> None:
    """Exact discovery (state.py: manifest + ONE listing of the state records) when every
    fragment has a record (the worst case: a stage with a `where`), vs. field presence alone."""
    from sila.coordinator.state import StageRecords, classify, dependencies
    from sila.coordinator.store import Store

    import sila

    lake = sila.Lake(d).init()
    recs = StageRecords(lake.store, "t", "b")
    for frag in ds.get_fragments()[: fragments - 1]:  # records for all but one
        stem = frag.data_files()[0].path.rsplit("/", 1)[-1].removesuffix(".lance")
        recs.write(stem, "id", "h", "w", True, None, frag.physical_rows, {})

    class B:
        name, table, inputs, where = "b", "t", ["x"], None

    Store.requests.clear()
    t0 = time.perf_counter()
    fresh = lance.dataset(f"{d}/t.lance")
    works = classify(
        fresh, B, None, StageRecords(lake.store, "t", "b").load(), {}, dependencies(fresh.schema, B)
    )
    ours = time.perf_counter() - t0
    requests = sum(Store.requests.values())
    t0 = time.perf_counter()
    pending_fragments(lance.dataset(f"{d}/t.lance"), "b")
    ref = time.perf_counter() - t0
    assert len(works) == fragments
    report(
        f"state_discovery_{fragments}_fragments",
        ours,
        ref,
        note=f"manifest + state listing ({requests} store request(s)) vs field presence only",
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench discovery")
    ap.add_argument("--fragments", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--commit-fragments", type=int, default=300)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        ds = build(f"{d}/t.lance", a.fragments, a.rows)
        t0 = time.perf_counter()
        pend = pending_fragments(lance.dataset(f"{d}/t.lance"), "b")
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        scan = lance.dataset(f"{d}/t.lance").to_table(
            columns=[], filter="y IS NULL", with_row_address=True
        )
        frags = np.unique(scan.column("_rowaddr").to_numpy() >> 32)
        ref = time.perf_counter() - t0
        assert len(pend) == len(frags) == a.fragments
        report(f"discovery_{a.fragments}_fragments", ours, ref, note="manifest vs `y IS NULL` scan")

        state_discovery(d, ds, a.fragments)

        # commit throughput on the first N fragments: one coalesced commit vs one per fragment
        n = a.commit_fragments
        y = pa.table({"y": np.zeros(a.rows), "b_error": pa.nulls(a.rows, pa.string())})
        files = [write_data_file(ds, y) for _ in range(2 * n)]
        t0 = time.perf_counter()
        lance.LanceDataset.commit(
            ds.uri,
            LanceOperation.DataReplacement(
                [LanceOperation.DataReplacementGroup(i, files[i]) for i in range(n)]
            ),
            read_version=ds.version,
        )
        batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n, 2 * n):
            cur = lance.dataset(ds.uri)
            lance.LanceDataset.commit(
                ds.uri,
                LanceOperation.DataReplacement([LanceOperation.DataReplacementGroup(i, files[i])]),
                read_version=cur.version,
            )
        single = time.perf_counter() - t0
        report(
            "commit_fragments_per_s",
            n / batched,
            n / single,
            unit="/s",
            note=f"coalesced vs per-fragment commits, table of {a.fragments} fragments",
        )
    return 0
