"""Ingest throughput and memory: `python -m bench ingest [--files 10000] [--big-gib 4]`.

* 10,000 tiny PNGs: `Lake.ingest` (walk, hash, probe, fragments, source_paths) against a plain
  loop that reads the same files and writes their bytes with pylance (same blob column, same
  fragment size): seconds, files/s and peak RSS.
* one ~4 GiB file (a WAV header over a sparse file: valid media, written in no time): peak RSS
  of blob ingest and of `--reference` ingest against the file's size.
Each side runs in its own process so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._util import report

HERE = Path(__file__).resolve().parent.parent
MiB = 1 << 20

OURS = """
import json, resource, sys, time
import sila
lake = sila.Lake(sys.argv[1])
t = time.perf_counter()
rep = lake.ingest([sys.argv[2]], reference=sys.argv[3] == "ref")
dt = time.perf_counter() - t
print(json.dumps({"s": dt, "added": rep.added, "failed": rep.failed, "fragments": rep.fragments,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

# The reference: what a user would write with pylance alone, no probing, no accounting.
RAW = """
import json, os, resource, sys, time
import lance, pyarrow as pa
META = {b"lance-encoding:blob": b"true"}
schema = pa.schema([pa.field("uri", pa.string()), pa.field("media", pa.large_binary(), metadata=META)])
root = sys.argv[2]
t = time.perf_counter()
files = sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)
def batches():
    for i in range(0, len(files), 16):
        part = files[i : i + 16]
        data = []
        for p in part:
            with open(p, "rb") as fh:
                data.append(fh.read())
        yield pa.RecordBatch.from_pydict({"uri": part, "media": data}, schema=schema)
lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches()), sys.argv[1] + "/raw.lance",
                    schema=schema, max_rows_per_file=64)
dt = time.perf_counter() - t
print(json.dumps({"s": dt, "added": len(files), "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _run(code: str, *args: str) -> dict:
    env = {**os.environ, "LANCE_LOG": "error", "PYTHONPATH": str(HERE)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env=env,
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def small_files(tmp: Path, n: int) -> None:
    sys.path.insert(0, str(HERE / "tests"))
    from ingest_gen import png_bytes

    src = tmp / "small"
    for i in range(n):
        sub = src / f"d{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:06d}.png").write_bytes(png_bytes(i))
    ours = _run(OURS, str(tmp / "lake-small"), str(src), "blob")
    ref = _run(RAW, str(tmp), str(src))
    assert ours["added"] == n and ours["failed"] == 0, ours
    report(
        f"ingest_{n}_small_files",
        ours["s"],
        ref["s"],
        note=f"ours {n / ours['s']:.0f} files/s in {ours['fragments']} fragments, "
        f"raw pylance write {n / ref['s']:.0f} files/s",
    )
    report(f"ingest_{n}_small_files_peak_rss", ours["rss"] / MiB, ref["rss"] / MiB, "MiB")


def one_big_file(tmp: Path, gib: float) -> None:
    sys.path.insert(0, str(HERE / "tests"))
    from ingest_gen import wav_header

    big = tmp / "big" / "long.wav"
    big.parent.mkdir()
    size = min(int(gib * (1 << 30)), (1 << 32) - 64)  # a WAV's sizes are 32-bit
    data = size - 44
    with open(big, "wb") as fh:
        fh.write(wav_header(data))
        fh.truncate(size)  # sparse: silence that takes no disk and no time to write
    for mode in ("blob", "ref"):
        got = _run(OURS, str(tmp / f"lake-big-{mode}"), str(big), mode)
        assert got["added"] == 1 and got["failed"] == 0, got
        label = "reference" if mode == "ref" else "blob"
        report(
            f"ingest_{gib:g}gib_file_{label}_peak_rss",
            got["rss"] / MiB,
            size / MiB,
            "MiB",
            note=f"ref = file size; {got['s']:.1f} s",
        )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ingest")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--big-gib", type=float, default=4.0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as d:
        if args.files:
            small_files(Path(d), args.files)
        if args.big_gib:
            one_big_file(Path(d), args.big_gib)
    return 0
