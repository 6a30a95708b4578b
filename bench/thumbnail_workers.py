"""`sila run thumbnail --workers 2` vs `--workers 1` on 300 ingested files: the speed-up a
CPU-bound stage gets from fragment-level parallelism (target >= 1.6 on 2 cores).

Parallel work needs several fragments: ingest writes fragments of `--rows-per-fragment` files.
Both runs are the real CLI on copies of one ingested lake, timed end to end (start-up included,
the same for both). `ours` = 2 workers, `ref` = 1 worker, in seconds: ratio < 1 is faster;
the speed-up printed is ref / ours. On a shared machine the figure moves with the load: the
load average is printed with it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._util import report
from sila.media import run_ffmpeg


def make_files(d: Path, n: int, size: str) -> list[Path]:
    """`n` distinct 1-second videos cut from one generated stream (one ffmpeg run)."""
    d.mkdir(parents=True, exist_ok=True)
    run_ffmpeg([
        "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}:r=25", "-t", str(n),
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
        "-f", "segment", "-segment_time", "1", "-reset_timestamps", "1", str(d / "f%04d.mp4"),
    ], timeout=600)  # fmt: skip
    return sorted(d.glob("f*.mp4"))[:n]


def sila_run(lake: Path, workers: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (the CLI and every process under it) of one run."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [str(Path(sys.executable).parent / "sila"), "run", "thumbnail", "--lake", str(lake),
           "--workers", str(workers), "--json"]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "LANCE_LOG": "error"})  # fmt: skip
    took = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"sila run failed: {out.stdout[-1000:]} {out.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return took, cpu


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench thumbnail_workers")
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--rows-per-fragment", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import sila

    with tempfile.TemporaryDirectory(prefix="sila-bench-") as d:
        files = make_files(Path(d) / "media", a.files, a.size)
        base = Path(d) / "base"
        sila.Lake(base).init().ingest(files, rows_per_fragment=a.rows_per_fragment)
        frags = len(sila.Lake(base).table("sources").get_fragments())
        times: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        for r in range(a.repeats):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):  # interleaved: load drifts
                lake = Path(d) / f"lake{workers}-{r}"
                shutil.copytree(base, lake)
                times[workers].append(sila_run(lake, workers))
                shutil.rmtree(lake)
    (one, cpu1), (two, cpu2) = min(times[1]), min(times[2])
    load = os.getloadavg()[0]
    print(f"# {len(files)} files ({a.size}, 1 s) in {frags} fragments; {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; speed-up {one / two:.2f}x (target >= 1.6)")  # fmt: skip
    print(f"# cores busy: 1 worker {cpu1 / one:.2f} ({cpu1:.0f} CPU-s), "
          f"2 workers {cpu2 / two:.2f} ({cpu2:.0f} CPU-s)")  # fmt: skip
    report("thumbnail_workers2_vs_1", two, one, unit="s", note=f"speed-up {one / two:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
