"""Frames for the captioner: sampled from the clip's video at a frame rate with a cap, scaled,
JPEG-encoded (the chat request carries them as base64 data URLs); quadrant-scan crops.

Decoding (`sila.media.FrameReader`) streams through the clip and keeps only the chosen frames,
so memory depends on the frame cap, never on the clip's length. A still image yields one frame.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image
from sila.stages.caption.prompt import Frame, MediaFacts

from sila.errors import MediaError, RowError
from sila.media import FrameReader, output_size, user_message


@dataclass
class Sampled:
    frames: list[Frame]
    facts: MediaFacts
    middle: Image.Image | None  # the middle frame at full size, kept for the quadrant scan


def targets(duration: float, fps: float, max_frames: int) -> list[float]:
    """Sample times: every 1/fps s from the start; when that exceeds `max_frames`, that many
    evenly spread over the clip (the effective rate drops, the whole clip stays covered)."""
    if duration <= 0 or fps <= 0:
        return [0.0]
    n = max(1, int(duration * fps + 1e-6))
    if n <= max_frames:
        return [i / fps for i in range(n)]
    return [(i + 0.5) * duration / max_frames for i in range(max_frames)]


def jpeg(img: Image.Image, max_side: int, quality: int) -> bytes:
    """`img` as JPEG bytes, its long side at most `max_side` (never up; bilinear)."""
    img = img.convert("RGB")
    size = output_size(*img.size, max_side=max_side)
    if size != img.size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def sample(
    path: str,
    fps: float,
    max_frames: int,
    max_side: int,
    quality: int = 85,
    keep_middle: bool = False,
) -> Sampled:
    """The caption frames of `path` (upright, JPEG at `max_side`), the facts the prompt states,
    and the full-size middle frame when `keep_middle`. RowError naming the reason otherwise."""
    try:
        return _sample(path, fps, max_frames, max_side, quality, keep_middle)
    except MediaError as e:  # the caption stage records row errors as RowError
        raise RowError(user_message(e, path, None, None, what="the clip's video")) from None


def _sample(
    path: str, fps: float, max_frames: int, max_side: int, quality: int, keep_middle: bool
) -> Sampled:
    want: list[float] = []

    def times(duration: float) -> list[float]:  # known once the reader has opened the file
        want.extend(targets(duration, fps, max_frames))
        return want

    reader = FrameReader(path, times=times, pad=False, fmt="rgb24")
    frames: list[Frame] = []
    middle = None
    last_t = None
    for t, image in reader.timed():
        if t == last_t:
            continue  # several targets fell on this frame (a low frame rate): one frame
        last_t = t
        img = Image.fromarray(image)
        if keep_middle and middle is None and t + 1e-6 >= want[len(want) // 2]:
            middle = img
        frames.append(Frame(round(t, 3), jpeg(img, max_side, quality)))
    if not frames:
        raise RowError(f"no frame decoded from the clip's video ({reader.decoded} decoded)")
    width, height = reader.display_size or (0, 0)
    duration = reader.duration_s
    is_video = reader.decoded > 1 and bool(duration)
    rate = reader.rate
    facts = MediaFacts(
        width=int(width),
        height=int(height),
        duration_s=round(duration, 3) if is_video and duration else None,
        fps=round(rate, 3) if is_video and rate else None,
        is_video=is_video,
    )
    if keep_middle and middle is None:
        middle = Image.open(io.BytesIO(frames[len(frames) // 2].jpeg))
    return Sampled(frames, facts, middle)


def regions(img: Image.Image) -> dict[str, Image.Image]:
    """The four quadrants and the centre (the middle half in each direction)."""
    w, h = img.size
    hw, hh = w // 2, h // 2
    return {
        "top_left": img.crop((0, 0, hw, hh)),
        "top_right": img.crop((hw, 0, w, hh)),
        "bottom_left": img.crop((0, hh, hw, h)),
        "bottom_right": img.crop((hw, hh, w, h)),
        "absolute_center": img.crop((w // 4, h // 4, w - w // 4, h - h // 4)),
    }
