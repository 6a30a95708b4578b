"""What-if vs re-running: the quality decision under a changed threshold, predicted from the
stored signals (`sila whatif`) next to re-running the decision stage (`sila run quality` with
the new rules), on a generated clips table.

    python -m bench whatif [--rows 100000]

Prints `whatif_vs_rerun: ours=X ref=Y ratio=Z` (seconds; ratio < 1: the what-if is faster) and
checks that the re-run's stored decision equals the prediction.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pyarrow as pa
from sila.coordinator.ops.whatif import apply, what_if
from sila.stages.quality import SCORES

import bench._util  # noqa: F401 - LANCE_LOG before lance loads
import sila
from bench._util import report


def signals_table(rows: int, seed: int = 0) -> pa.Table:
    """Clips with every score quality reads, spread so that its default rules reject some."""
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {"id": [f"c{i:07d}" for i in range(rows)]}
    for c in SCORES:
        cols[c] = rng.gamma(2.0, 40.0, rows)
    cols["motion_mean"] = rng.gamma(1.5, 0.4, rows)
    cols["aspect"] = rng.uniform(0.5, 2.5, rows)
    cols["video_duration_s"] = rng.uniform(1, 30, rows)
    cols["frozen_ratio"] = cols["black_ratio"] = cols["blank_ratio"] = rng.uniform(0, 0.6, rows)
    cols["video_artifacts"] = pa.array([[] for _ in range(rows)], pa.list_(pa.string()))
    cols["video_signals_error"] = pa.nulls(rows, pa.string())
    cols["split"] = rng.choice(["train", "val", "test"], rows)
    return pa.table(cols)


def main(argv: list[str]) -> int:
    """Run the benchmark; 1 when the re-run differs from the prediction."""
    ap = argparse.ArgumentParser(prog="python -m bench whatif")
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        lake = sila.Lake(f"{tmp}/lake").init()
        lake.create_table("clips", signals_table(args.rows))
        assert lake.run("quality", segment_rows=50_000)["state"] == "succeeded"
        t0 = time.perf_counter()
        r = what_if(lake, "quality", ["quality.min_motion=0.5"])
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        job = apply(lake, r, segment_rows=50_000)
        ref = time.perf_counter() - t0
        t = lake.table("clips").to_table(columns=["id", "quality_keep"])
        stored = dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))
        same = job["state"] == "succeeded" and stored == r.predicted
        report(
            "whatif_vs_rerun",
            ours,
            ref,
            note=f"{args.rows} rows, {r.flips_total} flip, re-run equals prediction: {same}",
        )
        return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main([]))
