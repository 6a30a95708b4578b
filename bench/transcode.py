"""Transcode throughput: `lake.run("transcode")` (probe + cropdetect + cut/crop/scale/encode +
lake writes) vs. one plain ffmpeg command per clip producing the same output (crop box given).

Throughput in seconds of video per wall-clock second: ratio > 1 means we are faster.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from bench._util import report
from sila.media import run_ffmpeg


def make_source(path: Path, seconds: float, size: tuple[int, int], bars: int, hue: int) -> None:
    """A letterboxed moving picture with a tone: `bars` black rows above and below."""
    w, h = size
    src = f"testsrc2=s={w}x{h - 2 * bars}:r=25,hue=h={hue},pad={w}:{h}:0:{bars}:black"
    run_ffmpeg([
        "-y", "-f", "lavfi", "-i", src, "-f", "lavfi", "-i", "sine=f=440:sample_rate=48000",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-shortest", str(path),
    ])  # fmt: skip


def plain_ffmpeg(src: str, start: float, dur: float, crop: list[int], out_wh, dst: Path) -> None:
    x, y, w, h = crop
    run_ffmpeg([
        "-ss", f"{start:.6f}", "-i", src, "-t", f"{dur:.6f}", "-map", "0:v:0", "-map", "0:a:0",
        "-vf", f"crop={w}:{h}:{x}:{y},scale={out_wh[0]}:{out_wh[1]},setsar=1",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", "-y", str(dst),
    ])  # fmt: skip


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench transcode")
    ap.add_argument("--sources", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--clip-seconds", type=float, default=4.0)
    ap.add_argument("--size", default="1920x1080")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import sila

    size = tuple(int(v) for v in a.size.split("x"))
    bars = size[1] // 8
    with tempfile.TemporaryDirectory(prefix="sila-bench-") as d:
        paths = [Path(d) / f"src{i}.mp4" for i in range(a.sources)]
        for i, p in enumerate(paths):  # distinct content: ingest dedups identical bytes
            make_source(p, a.seconds, size, bars, hue=40 * i)
        lake = sila.Lake(Path(d) / "lake").init()
        lake.ingest(paths)
        stride = {"method": "fixed-stride", "window_s": a.clip_seconds, "stride_s": a.clip_seconds}
        lake.run("split", settings=stride)
        t0 = time.perf_counter()
        job = lake.run("transcode")
        t_ours = time.perf_counter() - t0
        assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0, job
        clips = (
            lake.table("clips")
            .to_table(
                columns=[
                    "source_id",
                    "start_s",
                    "duration_s",
                    "crop_box",
                    "video_width",
                    "video_height",
                ]
            )
            .to_pylist()
        )
        src_of = {
            r["id"]: r["uri"]
            for r in lake.table("sources").to_table(columns=["id", "uri"]).to_pylist()
        }
        seconds = sum(c["duration_s"] for c in clips)
        t0 = time.perf_counter()
        for i, c in enumerate(clips):
            dims = (c["video_width"], c["video_height"])
            plain_ffmpeg(src_of[c["source_id"]], c["start_s"], c["duration_s"], c["crop_box"],
                         dims, Path(d) / f"ref{i}.mp4")  # fmt: skip
        t_ref = time.perf_counter() - t0
    print(f"# {len(clips)} clips, {seconds:g} s of {a.size} video with {bars}px letterbox bars")
    report("transcode_video_s_per_s", seconds / t_ours, seconds / t_ref, unit="",
           note="ours: lake.run incl. probe+cropdetect+writes; ref: one ffmpeg per clip")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
