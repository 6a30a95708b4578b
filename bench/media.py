"""Frames per second per core of `sila.media.FrameReader` vs raw PyAV and a raw ffmpeg pipe.

Same clips (lavfi `testsrc2`, 10 s, H.264, generated at 360p and 1080p), same output (size and
pixel format), one decoder thread everywhere. "Per core" is frames / CPU seconds of this
process and its children (the ffmpeg pipe decodes in a child), best of `--repeat` runs.
Two workloads: every frame as rgb24 at a 256 px short side (what embedding and captioning
read), and a 2 fps grid as gray at a 160 px short side (what the signals read). ratio = ours /
ref: 1.0 is parity, higher is faster.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from bench._util import report
from sila.media import FrameReader, ffmpeg_exe, output_size, run_ffmpeg

CLIPS = {"360p": "640x360", "1080p": "1920x1080"}
WORKLOADS = {  # name: (fps grid, 0 = every frame; short side; pixel format)
    "all_rgb256": (0.0, 256, "rgb24"),
    "grid2fps_gray160": (2.0, 160, "gray"),
}


def make_clip(path: Path, size: str, seconds: float, rate: int = 30) -> None:
    """A 10 s H.264 clip with motion and detail (testsrc2), yuv420p."""
    run_ffmpeg([
        "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}:r={rate}", "-t", f"{seconds:g}",
        "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p", str(path),
    ], timeout=600)  # fmt: skip


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def ours(path: str, fps: float, size: tuple[int, int], fmt: str) -> int:
    reader = FrameReader(path, fps=fps, size=size, fmt=fmt, interpolation="BICUBIC", threads=1)
    return sum(1 for _ in reader)


def raw_pyav(path: str, fps: float, size: tuple[int, int], fmt: str) -> int:
    """Decode every frame; convert each (or, on a grid, the first frame of each slot)."""
    n, next_t = 0, 0.0
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        s.codec_context.thread_count = 1
        for frame in c.decode(s):
            if fps > 0:
                if frame.time + 1e-6 < next_t:
                    continue
                next_t += 1.0 / fps
            frame.to_ndarray(
                format=fmt, width=size[0], height=size[1], interpolation="BICUBIC", threads=1
            )
            n += 1
    return n


def raw_pipe(path: str, fps: float, size: tuple[int, int], fmt: str) -> int:
    """ffmpeg -> rawvideo on a pipe, one frame per read."""
    w, h = size
    vf = ([f"fps={fps:g}"] if fps > 0 else []) + [f"scale={w}:{h}:flags=bicubic"]
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-threads", "1",
        "-i", path, "-vf", ",".join(vf), "-pix_fmt", fmt, "-f", "rawvideo",
        "-filter_threads", "1", "pipe:1",
    ]  # fmt: skip
    shape = (h, w) if fmt == "gray" else (h, w, 3)
    nbytes = int(np.prod(shape))
    n = 0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        while len(buf := proc.stdout.read(nbytes)) == nbytes:
            np.frombuffer(buf, np.uint8).reshape(shape)
            n += 1
    return n


def per_core(fn: Callable[..., int], repeat: int, *args) -> tuple[float, int, float]:
    """(frames per CPU second, frames, wall seconds), best of `repeat`."""
    best = (0.0, 0, 0.0)
    for _ in range(repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        frames = fn(*args)
        cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
        rate = frames / cpu if cpu > 0 else float("inf")
        if rate > best[0]:
            best = (rate, frames, wall)
    return best


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench media")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--clips", default=",".join(CLIPS))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sila-bench-media-") as d:
        for name in a.clips.split(","):
            path = os.path.join(d, f"{name}.mp4")
            make_clip(Path(path), CLIPS[name], a.seconds)
            w, h = (int(x) for x in CLIPS[name].split("x"))
            for work, (fps, short, fmt) in WORKLOADS.items():
                size = output_size(w, h, short_side=short, even=True)
                got = {
                    f.__name__: per_core(f, a.repeat, path, fps, size, fmt)
                    for f in (ours, raw_pyav, raw_pipe)
                }
                counts = {k: v[1] for k, v in got.items()}
                note = f"frames {counts}, {size[0]}x{size[1]} {fmt}"
                for ref in ("raw_pyav", "raw_pipe"):
                    report(
                        f"media_{name}_{work}_vs_{ref}",
                        got["ours"][0],
                        got[ref][0],
                        unit="fr/cpu-s",
                        note=note,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
