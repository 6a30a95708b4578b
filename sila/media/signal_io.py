"""Stream a clip's frames (or audio samples) out of ffmpeg as numpy arrays, one at a time.

Memory stays bounded by one frame (or one audio block) whatever the clip's length: the
filters read these generators and keep running statistics only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from sila.media import MediaError, _stderr_tail, ffmpeg_exe

log = logging.getLogger(__name__)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side at most `short_side` (never up), both even."""
    s = min(1.0, short_side / max(1, min(width, height))) if short_side > 0 else 1.0
    return max(2, round(width * s / 2) * 2), max(2, round(height * s / 2) * 2)


@dataclass
class FrameStream:
    """Gray (or BGR) frames of `path` sampled at `fps`, scaled to `size`.

    `pre` are ffmpeg filters run on the full-resolution sampled frames before scaling (e.g.
    `blockdetect`); their per-frame metadata lines land in `meta` after iteration.
    """

    path: str
    fps: float
    size: tuple[int, int]
    color: bool = False
    pre: list[str] = field(default_factory=list)
    max_frames: int = 0  # 0 = every sampled frame
    timeout_s: float = 300.0
    meta: list[str] = field(default_factory=list)

    def _args(self, meta_path: str | None) -> list[str]:
        w, h = self.size
        chain = [f"fps={self.fps!r}"] if self.fps > 0 else []
        chain += self.pre
        if self.pre and meta_path:
            chain.append(f"metadata=mode=print:file={meta_path}")
        chain += [f"scale={w}:{h}:flags=area", f"format={'bgr24' if self.color else 'gray'}"]
        limit = ["-frames:v", str(self.max_frames)] if self.max_frames else []
        return [
            "-i", "file:" + os.path.abspath(self.path), "-map", "0:v:0", "-an", "-sn",
            "-vf", ",".join(chain), *limit, "-f", "rawvideo", "-",
        ]  # fmt: skip

    def __iter__(self) -> Iterator[np.ndarray]:
        w, h = self.size
        shape = (h, w, 3) if self.color else (h, w)
        nbytes = int(np.prod(shape))
        with tempfile.TemporaryDirectory(prefix="sila-frames-") as tmp:
            meta_path = os.path.join(tmp, "meta.txt") if self.pre else None
            cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin"]
            proc = subprocess.Popen(
                [*cmd, *self._args(meta_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                while True:
                    buf = proc.stdout.read(nbytes)
                    if len(buf) < nbytes:
                        break
                    yield np.frombuffer(buf, np.uint8).reshape(shape)
                err = proc.stderr.read().decode("utf-8", errors="replace")
                rc = proc.wait(timeout=self.timeout_s)
            finally:
                if proc.poll() is None:  # the reader stopped early: do not leave ffmpeg behind
                    proc.kill()
                    proc.wait()
                with contextlib.suppress(OSError):
                    proc.stdout.close()
                    proc.stderr.close()
            if rc != 0:
                raise MediaError(f"ffmpeg could not decode frames: {_stderr_tail(err) or rc}")
            if meta_path and os.path.exists(meta_path):
                with open(meta_path, encoding="utf-8", errors="replace") as fh:
                    self.meta = fh.read().splitlines()


def audio_blocks(
    path: str, sample_rate: int = 16000, block_s: float = 10.0, timeout_s: float = 300.0
) -> Iterator[np.ndarray]:
    """Mono float32 samples of the first audio stream, in blocks of `block_s` seconds."""
    args = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
        "-i", "file:" + os.path.abspath(path), "-map", "0:a:0", "-vn", "-sn",
        "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-",
    ]  # fmt: skip
    nbytes = int(sample_rate * block_s) * 4
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        tail = b""
        while True:
            buf = proc.stdout.read(nbytes)
            if not buf:
                break
            buf = tail + buf
            cut = len(buf) - len(buf) % 4
            tail = buf[cut:]
            if cut:
                yield np.frombuffer(buf[:cut], np.float32)
        err = proc.stderr.read().decode("utf-8", errors="replace")
        rc = proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            proc.stdout.close()
            proc.stderr.close()
    if rc != 0:
        raise MediaError(f"ffmpeg could not decode audio: {_stderr_tail(err) or rc}")
