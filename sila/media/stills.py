"""Single pictures out of media: one frame at a time as JPEG bytes (thumbnails, previews)."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from sila.errors import MediaError
from sila.media.frames import FrameReader
from sila.media.probing import probe


def jpeg_quality(qscale: int) -> int:
    """ffmpeg's MJPEG ``-q:v`` (2 best .. 31 worst) as a PIL quality (95 .. 1)."""
    return max(1, min(95, round(100 - 5 * (int(qscale) - 1))))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """An HxWx3 rgb24 (or HxW gray) array as baseline JPEG bytes at PIL `quality`."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def frame_at(
    path: str,
    t_s: float,
    *,
    max_side: int = 0,
    even: bool = False,
    stream: int | None = None,
    label: str | None = None,
    threads: int = 0,
) -> np.ndarray:
    """The first frame at or after `t_s` seconds, upright, rgb24, the long side at most
    `max_side` (never up). MediaError when the video ends before `t_s`."""
    reader = FrameReader(
        path, times=[max(0.0, t_s)], max_side=max_side, even=even, stream=stream,
        pad=False, label=label, interpolation="BICUBIC", threads=threads,
    )  # fmt: skip
    frames = list(reader)
    if not frames:
        where = f"cannot extract a frame at {t_s:.3f}s from {reader.shown}"
        raise MediaError(f"{where}: no frame decoded (past the end?)")
    return frames[0]


def extract_frame_jpeg(
    path: str | os.PathLike[str], t_s: float, max_side: int = 512, quality: int = 3
) -> bytes:
    """Return one frame at ``t_s`` seconds as JPEG bytes, upright and downscaled.

    The longest side is at most ``max_side`` (never upscaled), aspect ratio is kept and
    both dimensions are even. For still images ``t_s`` is ignored. ``quality`` is ffmpeg's
    ``-q:v`` scale (2 best .. 31).
    """
    spath = os.fspath(path)
    info = probe(spath)
    if info.kind == "audio" and info.width is None:
        raise MediaError(f"cannot extract a frame: audio-only file: {spath}")
    t = t_s if info.kind == "video" else 0.0
    image = frame_at(spath, t, max_side=int(max_side), even=True)
    return encode_jpeg(image, jpeg_quality(quality))
