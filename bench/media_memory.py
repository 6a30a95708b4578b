"""Peak RSS of `split` (TransNetV2) and `transcode` on 5, 20 and 60 minutes of low-resolution
video, side by side: memory must be flat in the video's length (60 min at most 1.2x 5 min).

Each measurement is a fresh Python process running the stage inline (`Lake.run`), so the
figure is that process's own peak (ru_maxrss); ffmpeg children are small at this size. The
videos are lavfi `testsrc2` at a low frame rate (default 2 fps: 7,200 analysed frames in an
hour) so the bench fits in minutes on 2 cores; RSS grew per *analysed frame* before the fix
(~120 KB/frame), so frames are what count. `ref` is the 5-minute figure: ratio = 60 min / 5 min.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._util import report
from sila.media import run_ffmpeg

CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("LANCE_LOG", "error")
import sila
lake = sila.Lake(sys.argv[1])
settings = json.loads(sys.argv[3])
t0 = time.perf_counter()
job = lake.run(sys.argv[2], settings=settings, recompute=bool(int(sys.argv[4])))
took = time.perf_counter() - t0
assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0, job
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": took, "rows": job["progress"]["rows"],
                  "children": job["progress"].get("children", 0)}))
"""


def make_video(path: Path, minutes: float, size: str, fps: float) -> None:
    run_ffmpeg([
        "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}:r={fps:g}", "-t", f"{minutes * 60:g}",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p", str(path),
    ], timeout=600)  # fmt: skip


def measure(lake: Path, stage: str, settings: dict, recompute: bool = False) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(lake), stage, json.dumps(settings), str(int(recompute))],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "LANCE_LOG": "error"},
    )
    if out.returncode:
        raise RuntimeError(f"{stage} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench media_memory")
    ap.add_argument("--minutes", default="5,20,60")
    ap.add_argument("--size", default="160x90")
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--clip-s", type=float, default=30.0, help="transcode: fixed windows")
    ap.add_argument("--only", choices=["split", "transcode"], default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import sila

    lengths = [float(m) for m in a.minutes.split(",")]
    res: dict[str, dict[float, dict]] = {"split": {}, "transcode": {}}
    with tempfile.TemporaryDirectory(prefix="sila-bench-") as d:
        for minutes in lengths:
            video = Path(d) / f"v{minutes:g}.mp4"
            make_video(video, minutes, a.size, a.fps)
            lake_dir = Path(d) / f"lake{minutes:g}"
            sila.Lake(lake_dir).init().ingest([video])
            if a.only != "transcode":
                res["split"][minutes] = measure(lake_dir, "split", {})
            stride = {"method": "fixed-stride", "window_s": a.clip_s, "stride_s": a.clip_s}
            if a.only != "split":
                measure(lake_dir, "split", stride, recompute=a.only != "transcode")
                res["transcode"][minutes] = measure(lake_dir, "transcode", {"crop": False})
            video.unlink()
    print(f"# {a.size} at {a.fps:g} fps; one process per measurement, peak RSS in MB")
    for stage, by_len in res.items():
        if not by_len:
            continue
        side = "  ".join(
            f"{m:g}min={r['rss_mb']:.0f}MB ({r.get('children') or r['rows']} "
            f"{'clips' if stage == 'split' else 'clips encoded'}, {r['seconds']:.0f}s)"
            for m, r in by_len.items()
        )
        print(f"# {stage}: {side}")
        lo, hi = min(by_len), max(by_len)
        report(f"{stage}_peak_rss_{hi:g}min_vs_{lo:g}min", by_len[hi]["rss_mb"], by_len[lo]["rss_mb"],
               unit="MB", note="flat when ratio <= 1.2")  # fmt: skip
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main(sys.argv[1:])
    print(f"# total {time.perf_counter() - t0:.0f}s")
    sys.exit(code)
