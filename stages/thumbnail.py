"""`thumbnail`: one representative frame per source, as JPEG bytes plus its timestamp.

The frame is taken at a third of the video's duration (past intros, before outros); images
are thumbnailed as they are; audio has no frame and gets a row error.
"""

from __future__ import annotations

import pyarrow as pa

from sila.errors import RowError
from sila.media import MediaError, extract_frame_jpeg
from sila.stage import Resources, Stage


class Thumbnail(Stage):
    name = "thumbnail"
    table = "sources"
    inputs = ["media", "media_kind", "duration_s"]
    outputs = [
        pa.field("thumbnail", pa.binary()),
        pa.field("thumbnail_ts", pa.float64()),
    ]
    where = "ingest_error IS NULL"
    version = "1"
    model = "ffmpeg"
    segment_rows = 16
    compute_resources = Resources(cpus=1)
    settings = {"max_side": 384, "position": 1 / 3}

    def compute(self, batch: pa.RecordBatch) -> dict[str, list]:
        thumbs, times, errors = [], [], []
        for path, kind, duration in zip(
            *(batch.column(c).to_pylist() for c in self.inputs), strict=True
        ):
            try:
                ts = self._timestamp(kind, duration)
                thumbs.append(extract_frame_jpeg(path, ts, max_side=int(self.config["max_side"])))
                times.append(ts)
                errors.append(None)
            except (MediaError, RowError) as e:  # the row's answer is its error
                thumbs.append(None)
                times.append(None)
                errors.append(str(e))
        return {"thumbnail": thumbs, "thumbnail_ts": times, "thumbnail_error": errors}

    def _timestamp(self, kind: str | None, duration: float | None) -> float:
        if kind == "image":
            return 0.0
        if kind != "video":
            raise RowError(f"no picture to thumbnail: media kind is {kind or 'unknown'}")
        return round(float(duration or 0.0) * float(self.config["position"]), 3)
