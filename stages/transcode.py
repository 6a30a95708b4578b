"""`transcode`: each clip as a canonical H.264 mp4: borders cropped, size and frame rate capped.

Letterbox/pillarbox borders are found with ffmpeg's ``cropdetect`` on sampled frames of the
clip and cropped only when significant. The picture is upright (ffmpeg applies rotation
metadata while decoding), at most ``max_short_side`` pixels on its short side (never upscaled,
both sides even), H.264 yuv420p, at most ``max_fps`` frames/s, AAC audio when the source has
audio, and ``+faststart`` (moov before mdat) so it streams.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sila.errors import RowError
from sila.media import MediaError, Probe, probe, run_ffmpeg
from sila.schema import blob_field
from sila.stage import Resources, Stage

log = logging.getLogger(__name__)

CROP_BOX = pa.list_(pa.int32(), 4)  # [x, y, w, h]


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


def cut_args(path: str, start: float, duration: float, fps: float, decode_seek: bool) -> list[str]:
    """ffmpeg input args selecting [start, start + duration) of `path`, frame-accurately.

    Input seeking (`-ss` before `-i`) jumps near the start and decodes from a keyframe; in
    containers without an index (MPEG-TS, some mkv) it can land past the range, so callers
    retry with `decode_seek`, which decodes from the beginning and drops what precedes it.
    """
    seek, length = _span(start, duration, fps)
    src = ["-i", "file:" + os.path.abspath(path)]
    span = ["-ss", f"{seek:.6f}"]
    return [*src, *span, "-t", length] if decode_seek else [*span, *src, "-t", length]


def _span(start: float, duration: float, fps: float) -> tuple[float, str]:
    seek = max(0.0, start - min(0.5 / fps, 0.002))  # early: rounded start_s keeps frame one
    return seek, f"{duration + start - seek:.6f}"


def detect_boxes(
    path: str, start: float, duration: float, fps: float, samples: int, decode_seek: bool = False
) -> list[Box] | None:
    """Content boxes (display orientation) from cropdetect on ~`samples` frames of the range.

    None when no frame at all was decoded (an all-black frame decodes but has no box). The
    fast path skips decoding non-reference frames and the loop filter (borders stay black);
    `decode_seek` (the fallback) decodes everything from the start of the file.
    """
    every = max(1, round(duration * fps) // max(1, samples))
    detect = "cropdetect=reset=1:skip=0,metadata=mode=print:file=-"
    if decode_seek:  # output -ss trims after the filters: trim first so only the range is seen
        seek, length = _span(start, duration, fps)
        vf = f"trim=start={seek:.6f}:duration={length},select='not(mod(n\\,{every}))',{detect}"
        cut = ["-i", "file:" + os.path.abspath(path)]
    else:  # about half the frames are not decoded: sample twice as often
        vf = f"select='not(mod(n\\,{max(1, every // 2)}))',{detect}"
        fast = ["-skip_frame", "noref", "-skip_loop_filter", "all"]
        cut = [*fast, *cut_args(path, start, duration, fps, decode_seek=False)]
    args = [*cut, "-map", "0:v:0", "-vf", vf, "-fps_mode", "passthrough", "-f", "null", "-"]
    text = run_ffmpeg(args, timeout=600).decode("utf-8", errors="replace")
    if "frame:" not in text:
        return None
    boxes, cur = [], {}
    for line in text.splitlines():
        key, _, value = line.removeprefix("lavfi.cropdetect.").partition("=")
        if line.startswith("frame:"):
            cur = {}
        elif line.startswith("lavfi.cropdetect.") and key in ("x1", "x2", "y1", "y2"):
            cur[key] = int(float(value))
            if len(cur) == 4:  # the content's first/last column and row, inclusive
                w, h = cur["x2"] - cur["x1"] + 1, cur["y2"] - cur["y1"] + 1
                if w > 0 and h > 0:  # an all-black frame has no box
                    boxes.append(Box(cur["x1"], cur["y1"], w - w % 2, h - h % 2))
                cur = {}
    return boxes


def choose_crop(boxes: list[Box], width: int, height: int, min_border: float) -> Box:
    """One crop for the clip: the most common box if it is the majority, else outer quantiles.

    An axis is cropped only when its borders together exceed `min_border` of its size (and
    4 px); a box under a fifth of the picture is distrusted (dark content, not borders).
    """
    full = Box(0, 0, width, height)
    if not boxes:
        return full
    box, count = Counter(boxes).most_common(1)[0]
    if count < len(boxes) / 2:  # no stable box: keep what most frames show, erring wide
        x1 = int(np.quantile([b.x for b in boxes], 0.1))
        y1 = int(np.quantile([b.y for b in boxes], 0.1))
        x2 = int(np.quantile([b.x + b.w for b in boxes], 0.9))
        y2 = int(np.quantile([b.y + b.h for b in boxes], 0.9))
        box = Box(x1, y1, x2 - x1, y2 - y1)
    x, w = (box.x, box.w) if width - box.w > max(4, min_border * width) else (0, width)
    y, h = (box.y, box.h) if height - box.h > max(4, min_border * height) else (0, height)
    x, y = max(0, x), max(0, y)
    w, h = min(w, width - x), min(h, height - y)
    if w < width / 5 or h < height / 5:
        return full
    return Box(x, y, w, h)


def output_size(w: int, h: int, max_short_side: int) -> tuple[int, int]:
    """Scale (w, h) so the short side is at most `max_short_side`; never up; both even."""
    scale = min(1.0, max_short_side / min(w, h)) if max_short_side > 0 else 1.0
    return max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)


class Transcode(Stage):
    """Cut, crop, scale and re-encode each clip to a canonical mp4 (`video` blob column)."""

    name = "transcode"
    table = "clips"
    inputs = ["sources.media", "start_s", "end_s", "fps"]
    outputs = [
        blob_field("video"),
        pa.field("video_width", pa.int32()),
        pa.field("video_height", pa.int32()),
        pa.field("video_fps", pa.float64()),
        pa.field("video_duration_s", pa.float64()),
        pa.field("video_bytes", pa.int64()),
        pa.field("video_has_audio", pa.bool_()),
        pa.field("crop_box", CROP_BOX),  # [x, y, w, h] in upright source pixels; full frame = none
    ]
    version = "1"
    model = "ffmpeg/libx264"
    segment_rows = 4
    compute_resources = Resources(cpus=1)
    settings = {
        "max_short_side": 720,  # cap on min(width, height) of the output; 0 = keep size
        "max_fps": 30.0,  # higher source frame rates are reduced to this; lower ones kept
        "crf": 23,
        "preset": "veryfast",
        "audio_bitrate": "128k",
        "crop": True,
        "crop_samples": 12,  # frames of the clip examined by cropdetect
        "crop_min_border": 0.02,  # fraction of a side the borders must exceed to be cropped
        "threads": 0,  # x264 threads; 0 = ffmpeg's choice
        "timeout_s": 600,
    }

    def compute(self, batch: pa.RecordBatch) -> dict[str, list]:
        out: dict[str, list] = {f.name: [] for f in self.output_fields()}
        probes: dict[str, Probe] = {}
        for row in batch.to_pylist():
            try:
                values = self._one(row, probes)
                values["transcode_error"] = None
            except (MediaError, RowError) as e:  # the row's answer is its error
                values = {"transcode_error": str(e)}
            for name, column in out.items():
                column.append(values.get(name))
        return out

    def _one(self, row: dict, probes: dict[str, Probe]) -> dict:
        path = row["sources.media"]
        if not path:
            raise RowError("source media is missing (source row deleted or not ingested)")
        if path not in probes:
            probes[path] = probe(path)
        src = probes[path]
        if src.kind != "video" or not src.display_size:
            raise RowError(f"source is not a video (media kind {src.kind})")
        fps = float(row["fps"] or src.fps or 0)
        start, duration = float(row["start_s"]), float(row["end_s"]) - float(row["start_s"])
        if fps <= 0 or duration <= 0:
            raise RowError("clip has no frames or no frame rate")
        width, height = src.display_size
        crop = Box(0, 0, width, height)
        decode_seek = False
        if self.config["crop"]:
            samples = int(self.config["crop_samples"])
            boxes = detect_boxes(path, start, duration, fps, samples)
            if boxes is None:  # input seeking missed the range: decode from the start
                decode_seek = True
                boxes = detect_boxes(path, start, duration, fps, samples, decode_seek=True)
            if boxes is None:
                raise MediaError(f"no frame decoded in {start:.3f}-{start + duration:.3f} s")
            crop = choose_crop(boxes, width, height, float(self.config["crop_min_border"]))
        try:
            data, info = self._encode(path, src, start, duration, fps, crop, decode_seek)
        except MediaError as e:
            if decode_seek:
                raise
            log.info("transcode: input seek failed (%s); decoding from the start", e)
            data, info = self._encode(path, src, start, duration, fps, crop, decode_seek=True)
        return {
            "video": data,
            "video_width": info.width,
            "video_height": info.height,
            "video_fps": info.fps,
            "video_duration_s": round(info.frame_count / info.fps, 6)
            if info.frame_count and info.fps
            else info.duration_s,
            "video_bytes": len(data),
            "video_has_audio": info.has_audio,
            "crop_box": crop.as_list(),
        }

    def _encode(
        self,
        path: str,
        src: Probe,
        start: float,
        duration: float,
        fps: float,
        crop: Box,
        decode_seek: bool,
    ) -> tuple[bytes, Probe]:
        cfg = self.config
        out_w, out_h = output_size(crop.w, crop.h, int(cfg["max_short_side"]))
        filters = []
        max_fps = float(cfg["max_fps"])
        out_fps = fps
        if max_fps > 0 and fps > max_fps + 1e-3:
            filters.append(f"fps={max_fps!r}")
            out_fps = max_fps
        if (crop.w, crop.h) != src.display_size:
            filters.append(f"crop={crop.w}:{crop.h}:{crop.x}:{crop.y}:exact=1")
        filters.append(f"scale={out_w}:{out_h}:flags=bicubic,setsar=1")
        frames = max(1, round(duration * out_fps))
        audio = []
        if src.has_audio:
            audio = ["-map", "0:a:0", "-c:a", "aac", "-b:a", str(cfg["audio_bitrate"])]
            if (src.channels or 2) > 2:
                audio += ["-ac", "2"]
        with tempfile.TemporaryDirectory(prefix="sila-transcode-") as tmp:
            target = os.path.join(tmp, "clip.mp4")
            args = [
                *cut_args(path, start, duration, fps, decode_seek), "-map", "0:v:0",
                "-vf", ",".join(filters), "-frames:v", str(frames),
                "-c:v", "libx264", "-preset", str(cfg["preset"]), "-crf", str(cfg["crf"]),
                "-pix_fmt", "yuv420p", "-threads", str(int(cfg["threads"])), *audio,
                "-map_metadata", "-1", "-map_chapters", "-1", "-sn", "-dn",
                "-movflags", "+faststart", "-y", target,
            ]  # fmt: skip
            run_ffmpeg(args, timeout=float(cfg["timeout_s"]))
            span = f"{start:.3f}-{start + duration:.3f} s"
            try:
                info = probe(target)
            except MediaError as e:
                raise MediaError(f"ffmpeg encoded no usable video for {span}: {e}") from None
            if info.kind != "video" or not info.frame_count:
                raise MediaError(f"ffmpeg encoded no video frames for {span}")
            with open(target, "rb") as fh:
                data = fh.read()
        return data, info
