"""The paper's audio routing policy: every branch, at each threshold's edge (pure function)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sila.stages.audio_policy import (
    EFFECTS,
    NO_MUSIC,
    NO_VOCALS,
    AudioInputs,
    AudioMetrics,
    AudioPolicy,
    route,
)

LOUD = AudioMetrics(max_abs=0.5, p50_db=-30.0, active_ratio=0.9, speech_ratio=0.0, music_ratio=0.0)
EPS = 1e-6


def clip(**kw) -> AudioInputs:
    """A clip with clean non-silent audio, a face in sync, no music; override what a test needs."""
    original = replace(LOUD, **kw.pop("original", {}))
    base = {"has_audio": True, "has_face": True, "lip_sync_confidence": 5.0}
    base["is_music_instrument"] = False
    return AudioInputs(original=original, **{**base, **kw})


def stem(**kw) -> AudioMetrics:
    return replace(LOUD, **kw)


# -- no audio / silence --------------------------------------------------------------------------
def test_no_track_is_pool_none_not_a_clip_rejection():
    d = route(clip(has_audio=False))
    assert (d.pool, d.action, d.keep, d.reasons) == ("none", "none", False, ["no_audio_track"])


@pytest.mark.parametrize(
    ("field", "edge"), [("max_abs", 0.007), ("p50_db", -80.0), ("active_ratio", 0.2)]
)
def test_non_silence_edges(field, edge):
    at = route(clip(original={field: edge}))
    assert at.pool != "none" and at.keep is True  # exactly at the threshold: not silent
    below = route(clip(original={field: edge - (EPS if field != "p50_db" else 0.01)}))
    assert (below.pool, below.keep) == ("none", False)
    assert below.reasons == [f"silent:{field}"]


def test_all_silence_reasons_listed():
    d = route(clip(original={"max_abs": 0.0, "p50_db": -200.0, "active_ratio": 0.0}))
    assert d.reasons == ["silent:max_abs", "silent:p50_db", "silent:active_ratio"]


# -- speech branch ------------------------------------------------------------------------------
def test_lip_sync_edge_decides_the_branch():
    at = route(clip(lip_sync_confidence=3.0, original={"speech_ratio": 0.5}))
    assert (at.pool, at.action, at.keep) == ("speech", "keep_original", True)
    below = route(clip(lip_sync_confidence=3.0 - EPS, original={"speech_ratio": 0.5}))
    assert below.pool == "non_speech"  # not synced: speech here means vocals to suppress
    assert below.action == "suppress_vocals"


def test_speech_music_edge():
    under = route(clip(original={"music_ratio": 0.1 - EPS}))
    assert (under.action, under.keep) == ("keep_original", True)
    at = route(clip(original={"music_ratio": 0.1}))  # high_music: remove it
    assert (at.pool, at.action, at.keep) == ("speech", "remove_music", None)
    assert at.reasons == ["needs_separation@remove_music"]


def test_speech_with_instrument_keeps_original():
    d = route(clip(is_music_instrument=True, original={"music_ratio": 0.9}))
    assert (d.pool, d.action, d.keep) == ("speech", "keep_original", True)


def test_speech_after_music_removal_rechecks():
    x = clip(original={"music_ratio": 0.5})
    ok = route(replace(x, stems={NO_MUSIC: stem(speech_ratio=0.05, music_ratio=0.0)}))
    assert (ok.pool, ok.action, ok.keep, ok.reasons) == ("speech", "remove_music", True, [])
    lost = route(replace(x, stems={NO_MUSIC: stem(speech_ratio=0.05 - EPS, music_ratio=0.0)}))
    assert (lost.keep, lost.reasons) == (False, ["no_speech@remove_music"])
    left = route(replace(x, stems={NO_MUSIC: stem(speech_ratio=0.5, music_ratio=EPS)}))
    assert (left.keep, left.reasons) == (False, ["music_left@remove_music"])
    quiet = route(replace(x, stems={NO_MUSIC: stem(speech_ratio=0.5, max_abs=0.0069)}))
    assert (quiet.keep, quiet.reasons) == (False, ["silent:max_abs@remove_music"])


# -- non-speech branch --------------------------------------------------------------------------
def test_non_speech_clean_keeps_original():
    d = route(clip(has_face=False, lip_sync_confidence=None))
    assert (d.pool, d.action, d.keep) == ("non_speech", "keep_original", True)


def test_non_speech_speech_edge():
    under = route(clip(has_face=False, original={"speech_ratio": 0.05 - EPS}))
    assert (under.action, under.keep) == ("keep_original", True)
    at = route(clip(has_face=False, original={"speech_ratio": 0.05}))
    assert (at.action, at.keep, at.reasons) == (
        "suppress_vocals",
        None,
        ["needs_separation@suppress_vocals"],
    )


def test_non_speech_vocal_suppression_rechecks():
    x = clip(has_face=False, original={"speech_ratio": 0.6})
    ok = route(replace(x, stems={NO_VOCALS: stem(speech_ratio=0.05 - EPS, music_ratio=0.1 - EPS)}))
    assert (ok.action, ok.keep) == ("suppress_vocals", True)
    speech_left = route(replace(x, stems={NO_VOCALS: stem(speech_ratio=0.05, music_ratio=0.0)}))
    assert speech_left.reasons == ["speech_left@suppress_vocals"]
    music = route(replace(x, stems={NO_VOCALS: stem(speech_ratio=0.0, music_ratio=0.1)}))
    assert music.reasons == ["high_music@suppress_vocals"]  # no music removal: < 0.1 required


def test_non_speech_music_removal_rechecks():
    x = clip(has_face=False, original={"music_ratio": 0.1})
    assert route(x).reasons == ["needs_separation@remove_music"]
    ok = route(replace(x, stems={NO_MUSIC: stem(speech_ratio=0.0, music_ratio=0.0)}))
    assert (ok.action, ok.keep) == ("remove_music", True)
    left = route(replace(x, stems={NO_MUSIC: stem(speech_ratio=0.0, music_ratio=EPS)}))
    assert left.reasons == ["music_left@remove_music"]  # after removal: exactly 0


def test_non_speech_both_removals_use_the_effects_stem():
    x = clip(has_face=False, original={"music_ratio": 0.5, "speech_ratio": 0.5})
    assert route(x).action == "suppress_vocals+remove_music"
    d = route(replace(x, stems={EFFECTS: stem(speech_ratio=0.0, music_ratio=0.0)}))
    assert (d.pool, d.action, d.keep) == ("non_speech", "suppress_vocals+remove_music", True)


def test_non_speech_instrument_music_fails_the_literal_recheck():
    """The policy read literally: no music removal for an instrument, then music < 0.1."""
    x = clip(has_face=False, is_music_instrument=True, original={"music_ratio": 0.1})
    d = route(x)
    assert (d.action, d.keep, d.reasons) == ("keep_original", False, ["high_music"])


# -- missing inputs -----------------------------------------------------------------------------
def test_missing_inputs_are_undetermined_not_rejected():
    no_lip = route(clip(lip_sync_confidence=None))
    assert (no_lip.pool, no_lip.keep, no_lip.reasons) == (
        "undetermined",
        None,
        ["missing:lip_sync_confidence"],
    )
    no_face = route(clip(has_face=None))
    assert (no_face.pool, no_face.reasons) == ("undetermined", ["missing:has_face"])
    no_flag = route(clip(is_music_instrument=None, original={"music_ratio": 0.2}))
    assert no_flag.reasons == ["missing:is_music_instrument"]
    # without high music the instrument flag is not needed
    assert route(clip(is_music_instrument=None)).keep is True
    assert route(clip(original={"speech_ratio": None})).reasons == ["missing:speech_ratio"]
    assert route(clip(has_audio=None)).pool == "undetermined"
    assert route(clip(original={"max_abs": None})).reasons == ["missing:non_silence"]


def test_silence_wins_over_missing_models():
    d = route(clip(has_face=None, original={"max_abs": 0.0}))
    assert (d.pool, d.keep) == ("none", False)


def test_thresholds_come_from_the_policy():
    strict = AudioPolicy(min_lip_sync=6.0)
    assert route(clip(), strict).pool == "non_speech"
    assert route(clip()).pool == "speech"
