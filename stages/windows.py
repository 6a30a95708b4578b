"""`windows`: episodes -> fixed-length, stride-configurable windows as rows of `clips`.

The Xperience-style aligned windows: `window_frames` frames every `stride_frames` frames on the
episode's clock (every stream was resampled onto it at ingest), a short tail kept when it has at
least `min_frames`. Ids are `<episode source id>/<start>-<end>` in the episode's native frames,
like split's clips; `start_s`/`end_s` are times in the primary video file (a LeRobot v3 episode
starts `video_offset_s` into a shared file), so transcode cuts the right frames. The episode's
streams for a window are sliced by the `actions` stage.
"""

from __future__ import annotations

import pyarrow as pa
from sila.stages.split import CHILD_FIELDS

from sila.errors import RowError
from sila.stage import Emit, Stage


def window_bounds(frames: int, window: int, stride: int, min_frames: int) -> list[tuple[int, int]]:
    out = []
    for start in range(0, frames, max(1, stride)):
        end = min(start + window, frames)
        if end - start >= min_frames:
            out.append((start, end))
        if end == frames:
            break
    return out


class Windows(Stage):
    """Explode each episode into aligned windows (rows of `clips`)."""

    name = "windows"
    table = "sources"
    kind = "explode"
    child_table = "clips"
    child_fields = CHILD_FIELDS
    child_mutable_fields = ["clip_index"]
    child_rows_per_fragment = 64
    inputs = ["id", "episode_frames", "episode_fps", "video_offset_s", "width", "height"]
    outputs = [pa.field("windows_count", pa.int32())]
    where = "media_kind = 'episode' AND ingest_error IS NULL"
    version = "1"
    settings = {"window_frames": 20, "stride_frames": 20, "min_frames": 20}

    def compute(self, batch: pa.RecordBatch):
        w, s = int(self.config["window_frames"]), int(self.config["stride_frames"])
        m = min(int(self.config["min_frames"]), w)
        if w < 2 or s < 1:
            raise RowError(
                f"windows: window_frames must be >= 2 and stride_frames >= 1 (got {w}, {s})"
            )
        counts, errors, children = [], [], []
        for r in batch.to_pylist():
            n, fps = r["episode_frames"], r["episode_fps"]
            if not n or not fps:
                counts.append(None)
                errors.append("episode without frame count or frame rate")
                continue
            off = r["video_offset_s"] or 0.0
            bounds = window_bounds(int(n), w, s, m)
            for i, (a, b) in enumerate(bounds):
                children.append(
                    {
                        "id": f"{r['id']}/{a}-{b}",
                        "source_id": r["id"],
                        "clip_kind": "video",
                        "clip_index": i,
                        "start_frame": a,
                        "end_frame": b,
                        "start_s": round(off + a / fps, 6),
                        "end_s": round(off + b / fps, 6),
                        "duration_s": round((b - a) / fps, 6),
                        "fps": fps,
                        "width": r["width"],
                        "height": r["height"],
                    }
                )
            counts.append(len(bounds))
            errors.append(None if bounds else f"episode of {n} frames is shorter than {m} frames")
        table = pa.Table.from_pylist(children, schema=pa.schema(CHILD_FIELDS))
        return Emit(outputs={"windows_count": counts, "windows_error": errors}, children=table)
