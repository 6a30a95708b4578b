"""`transcode`: each clip as one canonical mp4 in the `video` blob column, whatever its kind.

* ``clip_kind = 'video'``: H.264 yuv420p, limited ("tv") range whatever the source's, borders cropped, size and frame rate capped, at a
  *constant* frame rate (variable-rate sources are put on a uniform grid), deinterlaced
  (``bwdif``) when the stream's field order says interlaced, AAC audio when the source has
  audio. Letterbox/pillarbox borders are found with ffmpeg's ``cropdetect`` on sampled frames
  of the clip and cropped only when significant. The picture is upright (ffmpeg applies
  rotation metadata while decoding), at most ``max_short_side`` pixels on its short side (never
  upscaled, both sides even), at most ``max_fps`` frames/s.
* ``clip_kind = 'image'``: a one-frame H.264 mp4 (``-tune stillimage``, ``image_crf``), same
  size rule: every visual clip decodes the same way (``video_frames = 1``, ``video_fps`` null).
* ``clip_kind = 'audio'``: an AAC-only mp4 (m4a); ``video_width``/``height``/``fps`` null.

The video and audio streams read are the ones with the default disposition. All outputs are
``+faststart`` (moov before mdat) so they stream. Each clip is encoded to its own temporary
file and read back once; a fragment of clips (bounded by `split`'s
``child_rows_per_fragment``) is what a worker holds before its data file is written.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from sila.errors import RowError
from sila.media import (
    MediaError,
    Probe,
    Streams,
    output_size,
    probe,
    read_streams,
    run_ffmpeg,
    user_message,
)
from sila.schema import blob_field
from sila.stage import Lookup, Resources, Stage

log = logging.getLogger(__name__)

CROP_BOX = pa.list_(pa.int32(), 4)  # [x, y, w, h]
# one range for every clip: full-range (JPEG/MJPEG `yuvj*`) sources are converted to limited
# ("tv") range, and the output is tagged so, like every other clip
LIMITED = "flags=bicubic:out_range=tv"


def fit_filter(w: int, h: int, short_side: int) -> str:
    """The scale (and pad) filters for a `w`x`h` picture: the one resize rule with both sides
    even, except that a 1-pixel side is not stretched to 2 (that would double the aspect): it
    is scaled to 1 and padded with one black line."""
    out_w, out_h = output_size(w, h, short_side=short_side, even=True)
    exact_w, exact_h = output_size(w, h, short_side=short_side)
    if exact_w == 1 or exact_h == 1:
        sw, sh = (exact_w if exact_w == 1 else out_w), (exact_h if exact_h == 1 else out_h)
        # pad in 4:4:4: a chroma-subsampled pad cannot place a 1-pixel picture (it goes black)
        return f"scale={sw}:{sh}:{LIMITED},setsar=1,format=yuv444p,pad={out_w}:{out_h}:0:0:black"
    return f"scale={out_w}:{out_h}:{LIMITED},setsar=1"


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
    path: str,
    start: float,
    duration: float,
    fps: float,
    samples: int,
    decode_seek: bool = False,
    stream: str = "0:v:0",
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
    args = [*cut, "-map", stream, "-vf", vf, "-fps_mode", "passthrough", "-f", "null", "-"]
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


class Transcode(Stage):
    """Cut, crop, scale and re-encode each clip to a canonical mp4 (`video` blob column)."""

    name = "transcode"
    table = "clips"
    inputs = ["source_id", "clip_kind", "start_s", "end_s", "fps"]
    # the source's file (a local path) and the user's name for it, as sources.media / .uri
    lookups = [Lookup("sources", ("media", "uri"), key="source_id")]
    outputs = [
        blob_field("video"),
        pa.field("video_width", pa.int32()),
        pa.field("video_height", pa.int32()),
        pa.field("video_fps", pa.float64()),  # constant; null for images and audio
        pa.field("video_frames", pa.int64()),  # 1 for an image, 0 for audio
        pa.field("video_duration_s", pa.float64()),
        pa.field("video_bytes", pa.int64()),
        pa.field("video_has_audio", pa.bool_()),
        pa.field("video_deinterlaced", pa.bool_()),
        pa.field("crop_box", CROP_BOX),  # [x, y, w, h] in upright source pixels; full frame = none
    ]
    version = "3"  # 3: one (limited) range for every clip; a 1-pixel side padded, not stretched
    model = "ffmpeg/libx264"
    segment_rows = 4
    compute_resources = Resources(cpus=1)
    settings = {
        "max_short_side": 720,  # cap on min(width, height) of the output; 0 = keep size
        "max_fps": 30.0,  # higher source frame rates are reduced to this; lower ones kept
        "crf": 23,
        "image_crf": 18,  # stills are looked at closely: less loss
        "preset": "veryfast",
        "audio_bitrate": "128k",
        "crop": True,
        "crop_samples": 12,  # frames of the clip examined by cropdetect
        "crop_min_border": 0.02,  # fraction of a side the borders must exceed to be cropped
        "deinterlace": "auto",  # "auto": when the field order says interlaced; "never"
        "threads": 0,  # x264 threads; 0 = ffmpeg's choice
        "timeout_s": 600,
    }

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """One clip cut, cropped, scaled and encoded (the base class records its errors)."""
        path = row["sources.media"]
        if not path:
            raise RowError("source media is missing (source row deleted or not ingested)")
        return self._one(row, path, self._streams(path))

    def row_error_message(self, exc: BaseException, row: dict[str, Any]) -> str:
        """Name the user's source file (the looked-up `sources.uri`), never the scratch copy."""
        path, uri = row.get("sources.media"), row.get("sources.uri")
        return user_message(exc, path, row.get("source_id"), uri)

    def _streams(self, path: str) -> Streams:
        """The source's streams, probed once for the consecutive clips of one source."""
        try:
            st = os.stat(path)
        except OSError:
            return read_streams(path)  # raises the MediaError that says what is wrong
        key = (path, st.st_size, st.st_mtime_ns)
        cached = self.__dict__.get("_streams_of")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_streams_of"] = (key, read_streams(path))
        return cached[1]

    def _one(self, row: dict[str, Any], path: str, src: Streams) -> dict[str, Any]:
        kind = row.get("clip_kind") or ("video" if src.video is not None else "audio")
        if kind == "image":
            return self._image(path, src)
        if kind == "audio":
            return self._audio(path, src, float(row["start_s"]), float(row["end_s"]))
        if src.video is None or not src.display_size:
            raise RowError("source has no video stream")
        fps = float(row["fps"] or src.fps or 0)
        start, duration = float(row["start_s"]), float(row["end_s"]) - float(row["start_s"])
        if fps <= 0 or duration <= 0:
            raise RowError("clip has no frames or no frame rate")
        width, height = src.display_size
        crop = Box(0, 0, width, height)
        decode_seek = False
        if self.config["crop"]:
            samples, pick = int(self.config["crop_samples"]), f"0:{src.video}"
            boxes = detect_boxes(path, start, duration, fps, samples, stream=pick)
            if boxes is None:  # input seeking missed the range: decode from the start
                decode_seek = True
                boxes = detect_boxes(path, start, duration, fps, samples, True, pick)
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
            "video_frames": info.frame_count,
            "video_duration_s": round(info.frame_count / info.fps, 6)
            if info.frame_count and info.fps
            else info.duration_s,
            "video_bytes": len(data),
            "video_has_audio": info.has_audio,
            "video_deinterlaced": self._deinterlace(src),
            "crop_box": crop.as_list(),
        }

    def _deinterlace(self, src: Streams) -> bool:
        return self.config["deinterlace"] == "auto" and src.interlaced

    def _image(self, path: str, src: Streams) -> dict:
        if src.video is None or not src.display_size:
            raise RowError("image has no picture stream")
        w, h = src.display_size
        size = fit_filter(w, h, int(self.config["max_short_side"]))
        args = [
            "-i", "file:" + os.path.abspath(path), "-map", f"0:{src.video}", "-frames:v", "1",
            "-vf", f"{size},format=yuv420p",
            "-color_range", "tv",
            "-c:v", "libx264", "-tune", "stillimage", "-crf", str(self.config["image_crf"]),
            "-preset", str(self.config["preset"]),
        ]  # fmt: skip
        data, info = self._run(args, "the image")
        return {
            "video": data,
            "video_width": info.width,
            "video_height": info.height,
            "video_fps": None,
            "video_frames": 1,
            "video_duration_s": 0.0,
            "video_bytes": len(data),
            "video_has_audio": False,
            "video_deinterlaced": False,
            "crop_box": [0, 0, w, h],
        }

    def _audio(self, path: str, src: Streams, start: float, end: float) -> dict:
        if src.audio is None:
            raise RowError("source has no audio stream")
        if end <= start:
            raise RowError("clip has no duration")
        args = [
            "-ss", f"{start:.6f}", "-i", "file:" + os.path.abspath(path), "-t", f"{end - start:.6f}",
            "-map", f"0:{src.audio}", "-vn", "-c:a", "aac", "-b:a", str(self.config["audio_bitrate"]),
            *(["-ac", "2"] if (src.channels or 2) > 2 else []),
        ]  # fmt: skip
        data, info = self._run(args, f"{start:.3f}-{end:.3f} s", want="audio")
        return {
            "video": data,
            "video_frames": 0,
            "video_duration_s": info.duration_s,
            "video_bytes": len(data),
            "video_has_audio": True,
            "video_deinterlaced": False,
        }

    def _run(self, args: list[str], span: str, want: str = "video") -> tuple[bytes, Probe]:
        """Encode to a temporary mp4, check it decodes as `want`, read it back once."""
        common = ["-map_metadata", "-1", "-map_chapters", "-1", "-sn", "-dn"]
        with tempfile.TemporaryDirectory(prefix="sila-transcode-") as tmp:
            target = os.path.join(tmp, "clip.mp4")
            cmd = [*args, *common, "-movflags", "+faststart", "-f", "mp4", "-y", target]
            run_ffmpeg(cmd, timeout=float(self.config["timeout_s"]))
            try:
                info = probe(target)
            except MediaError as e:
                raise MediaError(f"ffmpeg encoded no usable output for {span}: {e}") from None
            if want == "video" and (info.kind not in ("video", "image") or not info.frame_count):
                raise MediaError(f"ffmpeg encoded no video frames for {span}")
            if want == "audio" and not info.has_audio:
                raise MediaError(f"ffmpeg encoded no audio for {span}")
            with open(target, "rb") as fh:
                data = fh.read()
        return data, info

    def _encode(
        self,
        path: str,
        src: Streams,
        start: float,
        duration: float,
        fps: float,
        crop: Box,
        decode_seek: bool,
    ) -> tuple[bytes, Probe]:
        cfg = self.config
        filters = ["bwdif=mode=send_frame"] if self._deinterlace(src) else []
        max_fps = float(cfg["max_fps"])
        out_fps = min(fps, max_fps) if max_fps > 0 else fps
        filters.append(f"fps={out_fps!r}")  # a constant rate, also from variable-rate input
        if (crop.w, crop.h) != src.display_size:
            filters.append(f"crop={crop.w}:{crop.h}:{crop.x}:{crop.y}:exact=1")
        filters.append(fit_filter(crop.w, crop.h, int(cfg["max_short_side"])))
        frames = max(1, round(duration * out_fps))
        audio = []
        if src.audio is not None:
            audio = ["-map", f"0:{src.audio}", "-c:a", "aac", "-b:a", str(cfg["audio_bitrate"])]
            if (src.channels or 2) > 2:
                audio += ["-ac", "2"]
        args = [
            *cut_args(path, start, duration, fps, decode_seek), "-map", f"0:{src.video}",
            "-vf", ",".join(filters), "-fps_mode", "cfr", "-frames:v", str(frames),
            "-c:v", "libx264", "-preset", str(cfg["preset"]), "-crf", str(cfg["crf"]),
            "-pix_fmt", "yuv420p", "-color_range", "tv", "-threads", str(int(cfg["threads"])),
            *audio,
        ]  # fmt: skip
        return self._run(args, f"{start:.3f}-{start + duration:.3f} s")
