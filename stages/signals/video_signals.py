"""`video_signals`: CPU quality signals of each canonical clip (scores only, no decision).

From frames sampled at `sample_fps` and downscaled to `analysis_short_side`: motion (dense
Farneback optical flow: global mean and least-moving patch), frozen frames, sharpness (variance
of the Laplacian), exposure (brightness, contrast, black and blank frames), residual borders,
split screen, and compression blockiness (ffmpeg `blockdetect` on the full-size sampled frames).
Text overlay area comes from an OCR text detector on a few sparse frames. The short side and aspect
are values (duration is transcode's `video_duration_s`). Detector tags go to `video_artifacts`; the `quality` stage turns
scores and tags into a decision with the recipe's thresholds.

Model scores (an aesthetic predictor, DOVER) are pluggable scorers (`sila.stages.signals.scorers`):
without one their columns stay null and the column metadata says `none`.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import numpy as np
import pyarrow as pa
from sila.stages.signals.scorers import load_scorer, scorer_identity
from sila.stages.signals.text_overlay import RapidOcrDetector, measure_text
from sila.stages.signals.video_metrics import VideoMeter, blockiness

from sila.errors import RowError
from sila.filters import SettingsVersion
from sila.media import FrameReader, output_size, sample_times
from sila.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

F32 = pa.float32()
TAGS = pa.list_(pa.string())
SCORERS = ("aesthetic", "dover")


class VideoSignals(SettingsVersion, Stage):
    """Scores per clip from its canonical `video`; see the module docstring."""

    name = "video_signals"
    table = "clips"
    inputs = ["video", "video_width", "video_height", "video_duration_s"]
    outputs = [
        pa.field("motion_mean", F32),
        pa.field("motion_min_patch", F32),
        pa.field("frozen_ratio", F32),
        pa.field("sharpness", F32),
        pa.field("brightness", F32),
        pa.field("contrast", F32),
        pa.field("black_ratio", F32),
        pa.field("blank_ratio", F32),
        pa.field("border_ratio", F32),
        pa.field("split_screen", F32),
        pa.field("blockiness", F32),
        pa.field("text_area", F32),  # null: OCR off
        pa.field("text_vertical", F32),  # share of text area in upright boxes (null: OCR off)
        pa.field("short_side", pa.int32()),
        pa.field("aspect", F32),  # width / height
        pa.field("video_artifacts", TAGS),
        pa.field("aesthetic_score", F32),  # null: no aesthetic scorer
        pa.field("dover_aesthetic", F32),  # null: no DOVER scorer
        pa.field("dover_technical", F32),
    ]
    where = "transcode_error IS NULL"
    logic_version = "1"  # + a digest of every setting but timeout_s (see SettingsVersion)
    model = "opencv-farneback+laplacian; ffmpeg blockdetect"
    segment_rows = 8
    compute_resources = Resources(cpus=1)
    settings = {
        "sample_fps": 2.0,  # frames per second analysed (Data-Juicer's motion default)
        "analysis_short_side": 160,  # analysis scale (motion, blur, exposure, borders, split)
        "flow_short_side": 80,  # dense optical flow on a smaller copy still
        "patch_grid": 4,  # motion patches per side
        "blockdetect": True,  # compression blockiness (costs a full-size filter per frame)
        "ocr": "auto",  # "auto" (rapidocr if installed) | "rapidocr" | "none" | "module:factory"
        "ocr_frames": 1,  # frames per clip given to the OCR (sparse: it is the slow part)
        "ocr_short_side": 360,
        # detector tags written to video_artifacts (the quality recipe decides what they mean)
        "tag_split_screen": 0.85,  # split_screen score at or above: "split_screen"
        "tag_rotated_text": 0.6,  # text_vertical at or above (with text present): "rotated"
        "tag_text_area": 0.02,  # text_area at or above: "text_overlay"
        "tag_border": 0.04,  # border_ratio at or above: "border"
        "aesthetic_scorer": "",  # "module:factory"; factory(weights) -> f(rgb_frames) -> float
        "aesthetic_weights": "",
        "dover_scorer": "",  # factory(weights) -> f(rgb_frames) -> (aesthetic, technical)
        "dover_weights": "",
        "timeout_s": 300,
    }
    version_keys = tuple(k for k in settings if k != "timeout_s")

    def setup(self, ctx: StageContext) -> None:
        cfg = self.config
        self.scorers = {
            s: load_scorer(cfg[f"{s}_scorer"], cfg[f"{s}_weights"], what=f"video_signals {s}")
            for s in SCORERS
        }
        for s, fn in self.scorers.items():
            if fn is None:
                log.warning(
                    "video_signals: %s score skipped (no scorer): set stages.video_signals."
                    "%s_scorer = 'module:factory' and %s_weights = /path to compute it",
                    s,
                    s,
                    s,
                )
        ocr = str(cfg["ocr"])
        if ocr == "auto":
            ocr = "rapidocr" if importlib.util.find_spec("rapidocr_onnxruntime") else "none"
            if ocr == "none":
                log.warning(
                    "video_signals: text overlay skipped: no OCR installed "
                    "(pip install 'sila[ocr]'); text_area stays null"
                )
        if ocr == "none":
            self.ocr = None
        elif ocr == "rapidocr":
            self.ocr = RapidOcrDetector(
                round(int(cfg["ocr_short_side"]) * 16 / 9)
            )  # 16:9 at that short side
        else:
            self.ocr = load_scorer(ocr, "", what="video_signals ocr")
        facts = {
            f"sila.scorer.{s}": scorer_identity(cfg[f"{s}_scorer"], cfg[f"{s}_weights"])
            for s in SCORERS
        }
        facts["sila.scorer.ocr"] = getattr(self.ocr, "name", ocr) if self.ocr else "none"
        self.facts = facts  # stamped on the columns by the platform (column_facts)

    def column_facts(self) -> dict[str, str]:
        """Which scorer produced each model-score column (the version follows them)."""
        return dict(self.facts)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """One clip's scores and detector tags (the base class records its errors)."""
        path = row["video"]
        if not path:
            raise RowError("clip has no canonical video (run transcode)")
        w, h = int(row["video_width"] or 0), int(row["video_height"] or 0)
        if w <= 0 or h <= 0:  # an audio-only clip: nothing to see, which is an answer
            return {"video_artifacts": ["no_video"]}
        cfg = self.config
        fps = float(cfg["sample_fps"])
        size = output_size(w, h, short_side=int(cfg["analysis_short_side"]), even=True)
        pre = "blockdetect=period_min=3:period_max=24" if cfg["blockdetect"] else None
        gray = {"size": size, "fmt": "gray", "interpolation": "AREA", "pre": pre}
        stream = FrameReader(path, fps=fps, **gray)
        meter = VideoMeter(fps, size[0] / w, int(cfg["patch_grid"]), int(cfg["flow_short_side"]))
        rgb: list[np.ndarray] = []  # a few frames for model scorers (bounded)
        want_rgb = any(self.scorers.values())
        for gray in stream:
            meter.add(gray)
        if meter.n == 0:  # a still (image clip) has one frame, which the fps filter may drop
            stream = FrameReader(path, max_frames=1, **gray)
            for gray in stream:
                meter.add(gray)
        if meter.n == 0:
            raise RowError("no video frame decoded from the canonical clip")
        m = meter.result()
        values = {k: v for k, v in vars(m).items() if k != "frames"}
        values["blockiness"] = blockiness(stream.meta) if pre else None
        values["short_side"] = min(w, h)
        values["aspect"] = w / h
        if self.ocr is not None or want_rgb:
            rgb = self._sparse_frames(path, w, h, row["video_duration_s"])
        if self.ocr is not None:
            t = measure_text(rgb, self.ocr)
            values["text_area"], values["text_vertical"] = t.area, t.vertical
        if self.scorers["aesthetic"] is not None:
            values["aesthetic_score"] = float(
                self.scorers["aesthetic"]([f[..., ::-1] for f in rgb])
            )
        if self.scorers["dover"] is not None:
            a, t = self.scorers["dover"]([f[..., ::-1] for f in rgb])
            values["dover_aesthetic"], values["dover_technical"] = float(a), float(t)
        values["video_artifacts"] = self.tags(values)
        return values

    def _sparse_frames(self, path: str, w: int, h: int, duration: float | None) -> list[np.ndarray]:
        """`ocr_frames` BGR frames spread over the clip, each in the middle of its share
        (decoding stops after the last one)."""
        n = max(1, int(self.config["ocr_frames"]))
        size = output_size(w, h, short_side=int(self.config["ocr_short_side"]), even=True)
        times = sample_times(float(duration or 0.0) or 1.0, n)
        return list(FrameReader(path, times=times, size=size, fmt="bgr24", interpolation="AREA"))

    def tags(self, v: dict) -> list[str]:
        """Detector tags: artifacts whose detection is this stage's job (split, rotation, ...)."""
        cfg, tags = self.config, []
        if (v.get("split_screen") or 0.0) >= float(cfg["tag_split_screen"]):
            tags.append("split_screen")
        text = v.get("text_area")
        if text is not None and text >= float(cfg["tag_text_area"]):
            tags.append("text_overlay")
            if (v.get("text_vertical") or 0.0) >= float(cfg["tag_rotated_text"]):
                tags.append("rotated")
        if (v.get("border_ratio") or 0.0) >= float(cfg["tag_border"]):
            tags.append("border")
        return tags
