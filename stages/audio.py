"""`audio`: which audio each clip ships, by the paper's routing policy (`audio_policy.route`).

Reads the `audio_signals` columns; thresholds come from the recipe (`[stages.audio]`) and the
stage's version follows them, so changing one re-runs this decision only. `audio_keep` decides
the clip's audio track, never the clip: a clip without usable audio is still a video sample
(`audio_pool = "none"`), and one whose policy inputs are missing is `undetermined`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pyarrow as pa
from sila.stages.audio_policy import STEMS, AudioInputs, AudioMetrics, AudioPolicy, route

from sila.filters import Filter, Verdict

_METRICS = [f.name for f in fields(AudioMetrics)]


def inputs_of(row: dict[str, Any]) -> AudioInputs:
    """The policy's inputs from one row of `audio_signals` columns."""
    stems = {}
    for s in STEMS:
        v = row.get(f"stem_{s}")
        stems[s] = AudioMetrics(**{k: v.get(k) for k in _METRICS}) if v else None
    return AudioInputs(
        has_audio=row.get("audio_track"),
        original=AudioMetrics(**{k: row.get(k) for k in _METRICS}),
        has_face=row.get("has_face"),
        lip_sync_confidence=row.get("lip_sync_confidence"),
        is_music_instrument=row.get("is_music_instrument"),
        stems=stems,
    )


class Audio(Filter):
    """Route each clip's audio: pool, action, keep, reasons."""

    name = "audio"
    table = "clips"
    inputs = [
        "audio_track", *_METRICS, "has_face", "lip_sync_confidence", "is_music_instrument",
        *(f"stem_{s}" for s in STEMS), "audio_signals_error",
    ]  # fmt: skip
    extra_outputs = [pa.field("audio_pool", pa.string()), pa.field("audio_action", pa.string())]
    logic_version = "1"
    model = "rules: paper audio routing policy"
    settings: dict[str, Any] = {f.name: f.default for f in fields(AudioPolicy)}

    def filter(self, row: dict[str, Any]) -> Verdict:
        if row.get("audio_signals_error"):
            return Verdict(None, ["signals_error"], extra={"audio_pool": "undetermined"})
        if row.get("audio_track") is None:  # audio_signals did not run on this row
            return Verdict(None, ["no_signals"], extra={"audio_pool": "undetermined"})
        policy = AudioPolicy(**{k: float(v) for k, v in self.config.items()})
        d = route(inputs_of(row), policy)
        return Verdict(d.keep, d.reasons, extra={"audio_pool": d.pool, "audio_action": d.action})
