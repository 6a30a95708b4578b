"""`thumbnail`: one representative frame per source, as JPEG bytes plus its timestamp.

The frame is taken at a third of the *video stream's* duration (past intros, before outros;
not the container's, which an audio track may outlast), from the stream with the default
disposition; images are thumbnailed as they are; audio has no frame and gets a row error.
The longest side is at most ``max_side``, never upscaled, and no side rounds to 0 (a 1-pixel
wide picture stays 1 pixel wide).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from sila.errors import RowError
from sila.media import MediaError, Streams, encode_jpeg, frame_at, jpeg_quality, read_streams
from sila.stage import Resources, Stage


class Thumbnail(Stage):
    name = "thumbnail"
    table = "sources"
    inputs = ["id", "uri", "media", "media_kind"]
    outputs = [
        pa.field("thumbnail", pa.binary()),
        pa.field("thumbnail_ts", pa.float64()),
    ]
    where = "ingest_error IS NULL AND media_kind IN ('image', 'video', 'episode')"  # pictures only
    version = "4"  # 4: Matroska/WebM with audio thumbnailed a third in, not at 0 s
    model = "pyav+pil-jpeg"
    segment_rows = 16
    compute_resources = Resources(cpus=1)
    # one decoder thread: the stage asks for one CPU, so workers (not the decoder) scale it out;
    # quality is ffmpeg's MJPEG -q:v scale (2 best .. 31)
    settings = {"max_side": 384, "position": 1 / 3, "quality": 3, "threads": 1}

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """One source's thumbnail (JPEG bytes) and the time it was taken at."""
        path, kind = row["media"], row["media_kind"]
        if not path:
            raise RowError("media bytes are missing")
        if kind not in ("image", "video", "episode"):  # an episode: its primary camera
            raise RowError(f"no picture to thumbnail: media kind is {kind or 'unknown'}")
        streams = read_streams(path)
        if streams.video is None or not streams.display_size:
            raise RowError("no picture stream")
        ts = self._timestamp(kind, streams)
        try:
            return {"thumbnail": self._frame(path, streams, ts), "thumbnail_ts": ts}
        except MediaError:
            if ts <= 0:
                raise
            # the stream's stated duration was wrong (truncated file): its first frame, honestly
            return {"thumbnail": self._frame(path, streams, 0.0), "thumbnail_ts": 0.0}

    def _timestamp(self, kind: str, streams: Streams) -> float:
        duration = streams.video_duration_s
        if kind == "image" or not duration:
            return 0.0
        last = max(0.0, duration - 1.0 / (streams.fps or 25.0))  # the start of the last frame
        return round(min(duration * float(self.config["position"]), last), 3)

    def _frame(self, path: str, streams: Streams, ts: float) -> bytes:
        image = frame_at(
            path,
            ts,
            max_side=int(self.config["max_side"]),
            stream=streams.video,
            threads=int(self.config["threads"]),
        )
        return encode_jpeg(image, jpeg_quality(int(self.config["quality"])))
