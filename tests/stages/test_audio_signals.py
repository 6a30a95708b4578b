"""`audio_signals` + `audio` on generated truth: silence, tone, music-like, noise, real speech."""

from __future__ import annotations

import numpy as np
import pytest
from sila.stages.signals.audio_metrics import FRAME, SilenceMeter, silence_stats

from tests.gen.filter_cases import AUDIO_CASES
from tests.stages.filter_lake import build, rows

SIGNALS = ["audio_track", "max_abs", "p50_db", "active_ratio", "speech_ratio", "music_ratio"]
DECISION = ["audio_pool", "audio_action", "audio_keep", "audio_reasons"]

# Test doubles for models that cannot run here (no weights ship for them): they speak the
# plug-in protocol of `sila.stages.signals.scorers` (factory(weights) -> callable).
DOUBLES = """
import numpy as np

def face(weights):  # "a face in every frame"
    return lambda bgr: 1

def lip_sync(weights):  # SyncNet-style confidence: "in sync" wherever Silero hears speech
    from sila.stages.signals.audio_metrics import SileroVad
    from sila.media import audio_blocks

    vad = SileroVad()

    def confidence(path):
        vad.reset()
        for block in audio_blocks(path):
            vad.add(block)
        return 6.0 if float(np.mean(vad.result() >= 0.5)) > 0.5 else 1.0

    return confidence

def instrument(weights):
    return lambda path: False

def separator(weights):  # an ideal separator for these cases: removing music leaves silence
    return lambda wave, stem: np.zeros_like(wave) if stem != "no_vocals" else wave
"""


@pytest.fixture(scope="module")
def flake(tmp_path_factory):
    return build(str(tmp_path_factory.getbasetemp() / "filters"))


def test_every_audio_case_lands_on_its_side(flake):
    lake, ids = flake
    got = rows(lake, [*SIGNALS, "audio_signals_error"])
    for name, want in AUDIO_CASES.items():
        r = got[ids[f"audio_{name}"]]
        assert r["audio_signals_error"] is None and r["audio_track"] is True, (name, r)
        silent = not (r["max_abs"] >= 0.007 and r["p50_db"] >= -80 and r["active_ratio"] >= 0.2)
        assert silent is want["silent"], (name, r)
        assert (r["speech_ratio"] >= 0.05) is want["speech"], (name, r)
        assert (r["music_ratio"] >= 0.1) is want["music"], (name, r)


def test_default_decision_without_face_or_lip_sync_models(flake):
    """No face detector ships: every clip with audible audio is undetermined, never rejected;
    silent audio and a missing track go to the "none" pool (the clip stays a video sample)."""
    lake, ids = flake
    got = rows(lake, [*DECISION, "quality_keep"])
    assert got[ids["audio_no_track"]]["audio_pool"] == "none"
    assert got[ids["audio_no_track"]]["audio_reasons"] == ["no_audio_track"]
    silence = got[ids["audio_silence"]]
    assert (silence["audio_pool"], silence["audio_keep"]) == ("none", False)
    assert silence["quality_keep"] is True  # the audio decision never drops the clip
    for name in ("tone", "music", "noise", "speech"):
        r = got[ids[f"audio_{name}"]]
        assert (r["audio_pool"], r["audio_keep"]) == ("undetermined", None), (name, r)
        assert r["audio_reasons"][0] == "missing:has_face"
    assert got[ids["audio_music"]]["audio_reasons"] == [
        "missing:has_face",
        "missing:is_music_instrument",  # high music: the instrument flag would decide
    ]


def test_plugged_models_route_each_branch(flake, tmp_path):
    lake, ids = flake
    plug = tmp_path / "doubles.py"
    plug.write_text(DOUBLES)
    settings = {f"{p}_scorer": f"{plug}:{p}" for p in ("face", "lip_sync", "instrument")}
    settings["separator_scorer"] = f"{plug}:separator"
    # other models: a new version of the signals, so every row is measured again (no mixing)
    old = lake.table("clips").schema.field("has_face").metadata[b"sila.stage_version"]
    job = lake.run("audio_signals", settings=settings)
    assert job["state"] == "succeeded" and job["progress"]["rows"] == 14
    assert lake.table("clips").schema.field("has_face").metadata[b"sila.stage_version"] != old
    got = rows(lake, ["has_face", "audio_signals_error"]).values()
    assert all(r["has_face"] and r["audio_signals_error"] is None for r in got)
    assert lake.run("audio")["progress"]["rows"] == 14  # its inputs changed: decided again
    got = rows(lake, DECISION)
    speech = got[ids["audio_speech"]]
    assert (speech["audio_pool"], speech["audio_action"], speech["audio_keep"]) == (
        "speech",
        "keep_original",
        True,
    )
    music = got[ids["audio_music"]]  # face but out of sync, music, not an instrument
    assert (music["audio_pool"], music["audio_action"]) == ("non_speech", "remove_music")
    assert music["audio_keep"] is False and music["audio_reasons"][0].startswith("silent:")
    for name in ("tone", "noise"):
        r = got[ids[f"audio_{name}"]]
        assert (r["audio_pool"], r["audio_action"], r["audio_keep"]) == (
            "non_speech",
            "keep_original",
            True,
        )
    # back to the default models for the other tests of this session
    assert lake.run("audio_signals")["progress"]["rows"] == 14
    lake.run("audio")


def test_silence_meter_streams_like_one_shot():
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 0.1, 16000 * 3) * (np.arange(16000 * 3) > 16000)).astype(np.float32)
    m = SilenceMeter()
    for i in range(0, len(x), 777):  # odd blocks: frames straddle block boundaries
        m.add(x[i : i + 777])
    a, b = m.result(), silence_stats(x)
    assert (a.max_abs, a.p50_db, a.active_ratio) == (b.max_abs, b.p50_db, b.active_ratio)
    assert a.active_ratio == pytest.approx(2 / 3, abs=2 * FRAME / len(x))
    assert a.p50_db == pytest.approx(-20.0, abs=0.5)  # rms 0.1


def test_vad_in_blocks_equals_the_wheels_per_window_model():
    """Our one-call-per-block use of Silero's sequence export gives the wheel's own answers."""
    import torch
    from sila.stages.signals.audio_metrics import SileroVad
    from silero_vad import load_silero_vad

    from sila.media import audio_blocks
    from tests.gen.filter_cases import SPEECH

    x = np.concatenate(list(audio_blocks(str(SPEECH))))[: 16000 * 3]
    vad = SileroVad()
    for i in range(0, len(x), 7777):  # blocks that cut windows in two
        vad.add(x[i : i + 7777])
    model = load_silero_vad(onnx=True)
    ref = [
        float(model(torch.from_numpy(x[i : i + 512]), 16000)) for i in range(0, len(x) - 511, 512)
    ]
    assert np.allclose(vad.result(), ref, atol=1e-5)
    assert np.mean(vad.result() >= 0.5) > 0.5  # espeak-ng speech is speech
