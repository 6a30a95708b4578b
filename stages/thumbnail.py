"""`thumbnail`: one representative frame per source, as JPEG bytes plus its timestamp.

The frame is taken at a third of the *video stream's* duration (past intros, before outros;
not the container's, which an audio track may outlast), from the stream with the default
disposition; images are thumbnailed as they are; audio has no frame and gets a row error.
The longest side is at most ``max_side``, never upscaled, and no side rounds to 0 (a 1-pixel
wide picture stays 1 pixel wide).
"""

from __future__ import annotations

import os

import pyarrow as pa

from sila.errors import RowError
from sila.media import MediaError, run_ffmpeg
from sila.media.streams import Streams, read_streams, user_message
from sila.stage import Resources, Stage


def thumb_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Fit (width, height) inside max_side x max_side, never up, never a side of 0."""
    scale = min(1.0, max_side / max(width, height)) if max_side > 0 else 1.0
    return max(1, round(width * scale)), max(1, round(height * scale))


class Thumbnail(Stage):
    name = "thumbnail"
    table = "sources"
    inputs = ["id", "uri", "media", "media_kind"]
    outputs = [
        pa.field("thumbnail", pa.binary()),
        pa.field("thumbnail_ts", pa.float64()),
    ]
    where = "ingest_error IS NULL"
    version = "2"
    model = "ffmpeg"
    segment_rows = 16
    compute_resources = Resources(cpus=1)
    # one decoder thread: the stage asks for one CPU, so workers (not ffmpeg) scale it out
    settings = {"max_side": 384, "position": 1 / 3, "quality": 3, "threads": 1}

    def compute(self, batch: pa.RecordBatch) -> dict[str, list]:
        thumbs, times, errors = [], [], []
        for row in batch.to_pylist():
            try:
                jpeg, ts = self._one(row["media"], row["media_kind"])
                thumbs.append(jpeg)
                times.append(ts)
                errors.append(None)
            except (MediaError, RowError) as e:  # the row's answer is its error
                thumbs.append(None)
                times.append(None)
                errors.append(user_message(e, row["media"], row["id"], row["uri"]))
        return {"thumbnail": thumbs, "thumbnail_ts": times, "thumbnail_error": errors}

    def _one(self, path: str | None, kind: str | None) -> tuple[bytes, float]:
        if not path:
            raise RowError("media bytes are missing")
        if kind not in ("image", "video", "episode"):  # an episode: its primary camera
            raise RowError(f"no picture to thumbnail: media kind is {kind or 'unknown'}")
        streams = read_streams(path)
        if streams.video is None or not streams.display_size:
            raise RowError("no picture stream")
        ts = self._timestamp(kind, streams)
        try:
            return self._frame(path, streams, ts), ts
        except MediaError:
            if ts <= 0:
                raise
            # the stream's stated duration was wrong (truncated file): its first frame, honestly
            return self._frame(path, streams, 0.0), 0.0

    def _timestamp(self, kind: str, streams: Streams) -> float:
        duration = streams.video_duration_s
        if kind == "image" or not duration:
            return 0.0
        last = max(0.0, duration - 1.0 / (streams.fps or 25.0))  # the start of the last frame
        return round(min(duration * float(self.config["position"]), last), 3)

    def _frame(self, path: str, streams: Streams, ts: float) -> bytes:
        w, h = thumb_size(*streams.display_size, int(self.config["max_side"]))
        seek = ["-ss", f"{ts:.3f}"] if ts > 0 else []
        args = [
            "-threads", str(int(self.config["threads"])), *seek,
            "-i", "file:" + os.path.abspath(path), "-map", f"0:{streams.video}",
            "-frames:v", "1", "-vf", f"scale={w}:{h}:flags=bicubic,setsar=1",
            "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", str(int(self.config["quality"])), "-",
        ]  # fmt: skip
        out = run_ffmpeg(args, timeout=60)
        if not out:
            raise MediaError(f"no frame decoded at {ts:.3f} s")
        return out
