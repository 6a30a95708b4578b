"""Frames for the captioner: sampled from the clip's video at a frame rate with a cap, scaled,
JPEG-encoded (the chat request carries them as base64 data URLs); quadrant-scan crops.

Decoding streams through the clip with PyAV and keeps only the chosen frames, so memory
depends on the frame cap, never on the clip's length. A still image yields one frame.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
from PIL import Image
from sila.stages.caption.prompt import Frame, MediaFacts

from sila.errors import RowError


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
    img = img.convert("RGB")
    if max_side > 0 and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
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
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise RowError("the clip has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = float(stream.time_base or 0)
            duration = None
            if stream.duration and tb:
                duration = float(stream.duration * tb)
            elif container.duration:
                duration = container.duration / 1e6
            rate = float(stream.average_rate or 0) or None
            width, height = stream.codec_context.width, stream.codec_context.height
            want = targets(duration or 0.0, fps, max_frames)
            frames: list[Frame] = []
            middle_t = want[len(want) // 2]
            middle = None
            first_pts = None
            decoded = idx = 0
            for frame in container.decode(stream):
                decoded += 1
                t = float(frame.pts * tb) if frame.pts is not None and tb else 0.0
                first_pts = t if first_pts is None else first_pts
                t -= first_pts
                if t + 1e-6 < want[idx]:
                    continue  # the first frame at or after each target time is taken
                img = frame.to_image()
                width, height = img.size
                if keep_middle and middle is None and t + 1e-6 >= middle_t:
                    middle = img
                frames.append(Frame(round(t, 3), jpeg(img, max_side, quality)))
                idx += 1
                while idx < len(want) and want[idx] <= t + 1e-6:
                    idx += 1  # several targets fell on this frame (a low frame rate)
                if idx >= len(want):
                    break
    except (av.error.FFmpegError, OSError) as e:
        raise RowError(f"cannot decode the clip's video: {e}") from None
    if not frames:
        raise RowError(f"no frame decoded from the clip's video ({decoded} decoded)")
    is_video = decoded > 1 and bool(duration)
    facts = MediaFacts(
        width=int(width),
        height=int(height),
        duration_s=round(duration, 3) if is_video else None,
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
