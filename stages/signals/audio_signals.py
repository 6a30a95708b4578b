"""`audio_signals`: the audio facts the paper's routing policy reads, per clip (no decision).

Decodes the clip's audio with ffmpeg (mono, 16 kHz, streamed in blocks) and measures
non-silence (`max_abs`, `p50_db`, `active_ratio`), `speech_ratio` (Silero VAD) and
`music_ratio` (the documented estimator in `audio_metrics`, or a classifier), see
`sila.stages.signals.audio_metrics` for every definition. `has_face`, `lip_sync_confidence`,
`is_music_instrument` and source separation come from pluggable models
(`sila.stages.signals.scorers`); without one their columns are null, and the policy says so.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
from sila.stages.audio_policy import STEMS
from sila.stages.signals.audio_metrics import SR, MusicMeter, SilenceMeter, SileroVad, silence_stats
from sila.stages.signals.scorers import load_scorer, scorer_identity

from sila.errors import RowError
from sila.filters import SettingsVersion
from sila.media import FrameReader, audio_blocks, output_size, probe
from sila.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

F32 = pa.float32()
STEM = pa.struct(
    [
        pa.field("max_abs", F32),
        pa.field("p50_db", F32),
        pa.field("active_ratio", F32),
        pa.field("speech_ratio", F32),
        pa.field("music_ratio", F32),
    ]
)
PLUGS = ("face", "lip_sync", "instrument", "music", "separator")


class AudioSignals(SettingsVersion, Stage):
    """Audio signals per clip; see the module docstring."""

    name = "audio_signals"
    table = "clips"
    inputs = ["video", "video_width", "video_height", "video_has_audio"]
    outputs = [
        pa.field("audio_track", pa.bool_()),  # the clip has an audio stream
        pa.field("max_abs", F32),
        pa.field("p50_db", F32),
        pa.field("active_ratio", F32),
        pa.field("speech_ratio", F32),
        pa.field("music_ratio", F32),
        pa.field("has_face", pa.bool_()),  # null: no face detector
        pa.field("lip_sync_confidence", F32),  # null: no lip-sync scorer
        pa.field("is_music_instrument", pa.bool_()),  # null: no instrument classifier
        *(pa.field(f"stem_{s}", STEM) for s in STEMS),  # null: no source separator
    ]
    where = "transcode_error IS NULL"
    logic_version = "1"  # + a digest of the model settings (see SettingsVersion)
    model = "silero-vad (onnx, from its wheel); music: sila spectral estimator"
    segment_rows = 16
    compute_resources = Resources(cpus=1)
    settings = {
        "block_s": 10.0,  # decode blocks (memory bound)
        "face_scorer": "",  # factory(weights) -> f(bgr_frame) -> number of faces
        "face_weights": "",
        "face_frames": 3,  # frames per clip given to the face detector
        "lip_sync_scorer": "",  # factory(weights) -> f(video_path) -> SyncNet-style confidence
        "lip_sync_weights": "",
        "instrument_scorer": "",  # factory(weights) -> f(video_path) -> bool
        "instrument_weights": "",
        "music_scorer": "",  # factory(weights) -> f(mono16k) -> music_ratio (else the estimator)
        "music_weights": "",
        "separator_scorer": "",  # factory(weights) -> f(mono16k, stem) -> mono16k (stems: STEMS)
        "separator_weights": "",
        "timeout_s": 300,
    }
    version_keys = tuple(k for k in settings if k not in ("timeout_s", "block_s"))

    def setup(self, ctx: StageContext) -> None:
        cfg = self.config
        self.vad = SileroVad()
        self.plugs = {
            p: load_scorer(cfg[f"{p}_scorer"], cfg[f"{p}_weights"], what=f"audio_signals {p}")
            for p in PLUGS
        }
        missing = [p for p, fn in self.plugs.items() if fn is None and p != "music"]
        if missing:
            log.warning(
                "audio_signals: no %s model: those columns stay null (set stages.audio_signals."
                "<name>_scorer = 'module:factory'); the audio policy marks such clips undetermined",
                ", ".join(missing),
            )
        facts = {
            f"sila.scorer.{p}": scorer_identity(cfg[f"{p}_scorer"], cfg[f"{p}_weights"])
            for p in PLUGS
        }
        if not cfg["music_scorer"]:
            facts["sila.scorer.music"] = "sila.stages.signals.audio_metrics.MusicMeter"
        facts["sila.scorer.speech"] = self.vad.name
        self.facts = facts  # stamped on the columns by the platform (column_facts)

    def column_facts(self) -> dict[str, str]:
        """Which model produced each audio score column (the version follows them)."""
        return dict(self.facts)

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """One clip's audio signals (the base class records its errors)."""
        path = row["video"]
        if not path:
            raise RowError("clip has no canonical video (run transcode)")
        values: dict = {}
        has_audio = row.get("video_has_audio")
        if has_audio is None:
            has_audio = probe(path).has_audio
        values["audio_track"] = bool(has_audio)
        if not row.get("video_width"):  # an audio clip: no picture, so no face
            values["has_face"] = False
        elif self.plugs["face"] is not None:
            values["has_face"] = self._faces(path, row) > 0
        if not has_audio:  # no sound to sync or to call music
            return values
        if self.plugs["lip_sync"] is not None and values.get("has_face"):
            values["lip_sync_confidence"] = float(self.plugs["lip_sync"](path))
        if self.plugs["instrument"] is not None:
            values["is_music_instrument"] = bool(self.plugs["instrument"](path))
        silence, music = SilenceMeter(), MusicMeter()
        self.vad.reset()
        keep = self.plugs["music"] is not None or self.plugs["separator"] is not None
        kept: list[np.ndarray] = []  # whole waveform, only for whole-clip models
        for block in audio_blocks(
            path, SR, float(self.config["block_s"]), self.config["timeout_s"]
        ):
            silence.add(block)
            music.add(block)
            self.vad.add(block)
            if keep:
                kept.append(block)
        stats = silence.result()
        if stats is None:
            raise RowError("the audio track decoded to no samples")
        vad = self.vad.result()
        values.update(max_abs=stats.max_abs, p50_db=stats.p50_db, active_ratio=stats.active_ratio)
        values["speech_ratio"] = float(np.mean(vad >= 0.5)) if len(vad) else 0.0
        wave = np.concatenate(kept) if kept else None
        if self.plugs["music"] is not None:
            values["music_ratio"] = float(self.plugs["music"](wave))
        else:
            values["music_ratio"] = music.result(vad)
        if self.plugs["separator"] is not None:
            for stem in STEMS:
                values[f"stem_{stem}"] = self._stem(self.plugs["separator"](wave, stem))
        return values

    def _stem(self, x: np.ndarray) -> dict:
        """The policy's re-check inputs measured on a separated stem."""
        x = np.asarray(x, np.float32)
        stats = silence_stats(x)
        self.vad.reset()
        self.vad.add(x)
        vad = self.vad.result()
        music = MusicMeter()
        music.add(x)
        m = self.plugs["music"](x) if self.plugs["music"] is not None else music.result(vad)
        return {
            "max_abs": stats.max_abs if stats else None,
            "p50_db": stats.p50_db if stats else None,
            "active_ratio": stats.active_ratio if stats else None,
            "speech_ratio": float(np.mean(vad >= 0.5)) if len(vad) else 0.0,
            "music_ratio": m,
        }

    def _faces(self, path: str, row: dict) -> int:
        w, h = int(row.get("video_width") or 0), int(row.get("video_height") or 0)
        if w <= 0 or h <= 0:
            info = probe(path)
            w, h = info.display_size or (0, 0)
        n = max(1, int(self.config["face_frames"]))
        size = output_size(w, h, short_side=360, even=True)
        frames = FrameReader(path, fps=1.0, size=size, fmt="bgr24", max_frames=n)
        return max((int(self.plugs["face"](f)) for f in frames), default=0)
