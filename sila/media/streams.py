"""Which streams of a media file the media stages read, and the facts they need about them.

`ingest` probes a file once for the `sources` row; the stages that decode it (split, thumbnail,
transcode) need more about the *chosen* streams: the video stream with the default disposition
(not merely the first), its own duration (audio may outlast it), its field order (interlaced?)
and its frame rate; the audio stream's sample rate. One PyAV open, one decoded frame.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Any

import av

from sila.errors import MediaError
from sila.media.errors import reason
from sila.media.probing import pick_default as _pick
from sila.media.probing import probe
from sila.media.sizes import display_size

# AVFieldOrder: 1 progressive, 2 tt, 3 bb, 4 tb, 5 bt; 0 unknown
_INTERLACED = {2: "tt", 3: "bb", 4: "tb", 5: "bt"}


@dataclass(frozen=True)
class Streams:
    """The chosen video and audio streams of one file (absolute stream indexes)."""

    video: int | None = None
    audio: int | None = None
    width: int | None = None  # coded size of the chosen video stream
    height: int | None = None
    rotation: int = 0  # clockwise degrees to show it upright (as `sila.media.Probe`)
    fps: float | None = None  # average frame rate of the chosen video stream
    video_duration_s: float | None = None  # the video stream's own duration
    field_order: str = "progressive"  # "progressive" | "unknown" | "tt" | "bb" | "tb" | "bt"
    sample_rate: int | None = None
    channels: int | None = None
    audio_duration_s: float | None = None

    @property
    def interlaced(self) -> bool:
        return self.field_order in _INTERLACED.values()

    @property
    def display_size(self) -> tuple[int, int] | None:
        """(width, height) as displayed, i.e. after applying ``rotation``."""
        return display_size(self.width, self.height, self.rotation)


def _seconds(stream: Any) -> float | None:
    """The stream's own duration: its header's, else the Matroska/WebM per-track `DURATION`
    tag (Matroska has no stream duration field; ffmpeg's muxer writes the tag instead)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), None)
    m = re.fullmatch(r"\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)\s*", tag or "")
    if m:
        seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        return seconds if seconds > 0 else None
    return None


def _rate(stream: Any) -> float | None:
    for r in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if r is not None and float(r) > 0:
            return round(float(r), 6)
    return None


def read_streams(path: str) -> Streams:
    """Open `path` with PyAV and describe its chosen streams; MediaError if it cannot open."""
    try:
        container = av.open("file:" + os.path.abspath(path), metadata_errors="replace")
    except Exception as e:  # noqa: BLE001 - PyAV raises many types; normalise them
        probe(path)  # raises with ingest's diagnosis (truncated, not media, ...) when it has one
        raise MediaError(f"cannot open media: {reason(e)}") from None
    try:
        attached = av.stream.Disposition.attached_pic
        video = _pick([s for s in container.streams.video if not (s.disposition & attached)])
        audio = _pick(list(container.streams.audio))
        fields: dict[str, Any] = {}
        if audio is not None:
            acc = audio.codec_context
            fields.update(
                audio=audio.index,
                sample_rate=acc.sample_rate or None,
                channels=acc.channels or None,
                audio_duration_s=_seconds(audio),
            )
        if video is not None:
            vcc = video.codec_context
            order = int(vcc.field_order or 0) if hasattr(vcc, "field_order") else 0
            duration = _seconds(video)
            fps = _rate(video)
            if duration is None and video.frames and fps:
                duration = video.frames / fps
            if duration is None and audio is None and container.duration:
                duration = container.duration / 1e6  # no audio to outlast the video
            fields.update(
                video=video.index,
                width=vcc.width or None,
                height=vcc.height or None,
                rotation=_rotation(container, video),
                fps=fps,
                video_duration_s=duration,
                field_order=_INTERLACED.get(order, "progressive" if order == 1 else "unknown"),
            )
        return Streams(**fields)
    finally:
        container.close()


def _rotation(container: Any, stream: Any) -> int:
    """Clockwise rotation from the first decoded frame's display matrix (or the legacy tag)."""
    degrees = 0.0
    with contextlib.suppress(Exception):
        for frame in container.decode(stream):
            degrees = -(frame.rotation or 0)
            break
    if degrees == 0 and "rotate" in stream.metadata:
        with contextlib.suppress(ValueError):
            degrees = float(stream.metadata["rotate"])
    return int(round(degrees / 90.0)) % 4 * 90
