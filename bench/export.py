"""Export throughput: `sila export wds` (Lance blob reads, bucketing, tar, sha256, Energon index)
vs. writing the same bytes with plain `tarfile` from memory (the disk's limit). Also the pipeline
figure of issue 25 lives in bench/pipeline.py.

    python -m bench export [--clips 200] [--mb-per-clip 1]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tarfile
import tempfile
import time

import lance
import numpy as np
import pyarrow as pa

from bench._util import report

BLOB = {"lance-encoding:blob": "true", "sila.stage": "transcode"}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench export")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--mb-per-clip", type=float, default=1.0)
    args = ap.parse_args(argv)
    import sila

    rng = np.random.default_rng(0)
    size = int(args.mb_per_clip * 1e6)
    payloads = [b"\x00\x00\x00\x18ftypmp42" + rng.bytes(size - 12) for _ in range(args.clips)]
    with tempfile.TemporaryDirectory(prefix="sila-bench-export-") as d:
        lake = sila.Lake(os.path.join(d, "lake")).init()
        schema = pa.schema(
            [
                ("id", pa.string()),
                pa.field("video", pa.large_binary(), metadata=BLOB),
                ("video_width", pa.int32()),
                ("video_height", pa.int32()),
                ("video_duration_s", pa.float64()),
                ("video_bytes", pa.int64()),
            ]
        )
        tbl = pa.table(
            {
                "id": [f"s{i % 20}/{i}-{i + 1}" for i in range(args.clips)],
                "video": payloads,
                "video_width": [1280] * args.clips,
                "video_height": [720] * args.clips,
                "video_duration_s": [float(i % 12) for i in range(args.clips)],
                "video_bytes": [size] * args.clips,
            },
            schema=schema,
        )
        lance.write_dataset(tbl, lake.table_uri("clips"), schema=schema, max_rows_per_file=64)
        total_mb = args.clips * size / 1e6
        t = time.perf_counter()
        lake.export(os.path.join(d, "ours"), target_bytes=100_000_000)
        ours = time.perf_counter() - t
        t = time.perf_counter()
        with (
            open(os.path.join(d, "plain.tar"), "wb") as raw,
            tarfile.open(fileobj=raw, mode="w") as tar,
        ):
            for i, p in enumerate(payloads):
                info = tarfile.TarInfo(f"{i}.mp4")
                info.size = len(p)
                tar.addfile(info, io.BytesIO(p))
                info = tarfile.TarInfo(f"{i}.json")
                info.size = 2
                tar.addfile(info, io.BytesIO(b"{}"))
            raw.flush()
            os.fsync(raw.fileno())
        ref = time.perf_counter() - t
    report(
        "export_MBps",
        total_mb / ours,
        total_mb / ref,
        " MB/s",
        f"{args.clips} clips x {args.mb_per_clip} MB; ratio = ours/plain tarfile (target >= 0.8)",
    )
    print(
        f"export_peak_rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
        f"(payloads held in memory for the reference: {total_mb:.0f} MB)"
    )
    return 0
