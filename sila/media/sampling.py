"""Frames sampled from a clip's canonical video, decoded in-process with PyAV.

Used by `embed`, `fingerprint` and `tag`. Only the sampled frames are kept (scaled down while
converting), so memory depends on the sample count, never on the clip's length. An image
(a one-row clip of a still) yields its single frame.
"""

from __future__ import annotations

import logging

import av
import numpy as np

from sila.errors import RowError

log = logging.getLogger(__name__)


def sample_times(duration: float, count: int, fps: float = 0.0, max_count: int = 64) -> list[float]:
    """Timestamps (s) to sample: `fps` frames per second when set, else `count` frames, each at
    the middle of its equal share of the clip (never the very first/last frame, often a cut)."""
    if duration <= 0:
        return [0.0]
    n = min(max_count, max(1, round(duration * fps))) if fps > 0 else max(1, count)
    return [(i + 0.5) * duration / n for i in range(n)]


def _size(w: int, h: int, short_side: int) -> tuple[int, int]:
    if short_side <= 0 or min(w, h) == short_side:
        return w, h
    s = short_side / min(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def sample_frames(
    path: str,
    count: int = 8,
    fps: float = 0.0,
    short_side: int = 256,
    fmt: str = "rgb24",
    max_count: int = 64,
    size: tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """Decode `path` and return the frames nearest the sample times, as HxWxC uint8 arrays
    (HxW for `fmt="gray"`), scaled so the short side is `short_side` (bicubic, as CLIP's
    own transform), or to exactly `size` (w, h) with area averaging when given.

    Raises RowError naming the problem when the file has no decodable video frame.
    """
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:  # the path is a temporary copy: name the reason only
        raise RowError(
            f"the clip's video does not open: {getattr(e, 'strerror', None) or e}"
        ) from None
    with container:
        if not container.streams.video:
            raise RowError("the clip has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1e6
        targets = sample_times(duration, count, fps, max_count)
        out: list[np.ndarray] = []
        last = None
        t0 = None
        try:
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    t = frame.time or 0.0
                else:
                    t = float(frame.pts * frame.time_base)
                t0 = t if t0 is None else t0
                last = frame
                # keep the first frame at or past each target (a frame can serve several)
                while len(out) < len(targets) and t - t0 >= targets[len(out)] - 1e-6:
                    out.append(_convert(frame, short_side, fmt, size))
                if len(out) == len(targets):
                    break
        except av.FFmpegError as e:
            if last is None:
                reason = getattr(e, "strerror", None) or e
                raise RowError(f"the clip's video does not decode: {reason}") from None
            log.info("decode stopped early in %s: %s", path, e)
        if last is None:
            raise RowError("the clip's video has no decodable frame")
        while len(out) < len(targets):  # duration overstated: the last frame stands in
            out.append(_convert(last, short_side, fmt, size))
        return out


def _convert(frame, short_side: int, fmt: str, size: tuple[int, int] | None) -> np.ndarray:
    if size is not None:
        return frame.to_ndarray(format=fmt, width=size[0], height=size[1], interpolation="AREA")
    w, h = _size(frame.width, frame.height, short_side)
    return frame.to_ndarray(format=fmt, width=w, height=h, interpolation="BICUBIC")
