"""`video_signals` on generated truth through the real pipeline: every case on its side."""

from __future__ import annotations

import pyarrow as pa
import pytest
from sila.stages.signals.video_signals import VideoSignals

from sila.errors import SilaError
from sila.stage import StageContext
from tests.gen.filter_cases import VIDEO_CASES, W, make_video_cases
from tests.stages.filter_lake import build, rows

# tags a case may carry besides its own (a dark frame is also black, blank and motionless)
ALSO = {"dark": {"static", "black_frames", "blank_frames", "low_contrast", "frozen"}}


@pytest.fixture(scope="module")
def flake(tmp_path_factory):
    return build(str(tmp_path_factory.getbasetemp() / "filters"))


def test_every_video_case_lands_on_its_side(flake):
    lake, ids = flake
    got = rows(lake, ["quality_keep", "quality_reasons", "quality_flags", "video_signals_error"])
    for case in VIDEO_CASES:
        r = got[ids[case.name]]
        assert r["video_signals_error"] is None, (case.name, r)
        tags = set(r["quality_reasons"]) | set(r["quality_flags"])
        assert r["quality_keep"] is case.keep, (case.name, r)
        assert set(case.tags) <= tags, (case.name, tags)
        assert tags <= set(case.tags) | ALSO.get(case.name, set()), (case.name, tags)
    # the audio cases ride on a clean moving picture: kept, nothing flagged
    for name in ("audio_tone", "audio_speech", "audio_no_track"):
        r = got[ids[name]]
        assert (r["quality_keep"], r["quality_reasons"], r["quality_flags"]) == (True, [], [])


def test_values_are_values_not_buckets(flake):
    lake, ids = flake
    r = rows(lake, ["short_side", "aspect", "video_duration_s", "motion_mean", "motion_min_patch"])
    moving = r[ids["moving"]]
    assert moving["short_side"] == 180 and moving["aspect"] == pytest.approx(W / 180, abs=0.01)
    assert moving["video_duration_s"] == pytest.approx(3.0, abs=0.1)
    assert moving["motion_min_patch"] <= moving["motion_mean"]
    assert r[ids["static"]]["motion_mean"] < 0.25 <= moving["motion_mean"]


def test_scorer_columns_say_which_scorer_ran(flake):
    lake, _ = flake
    stamp = pytest.importorskip("sila.column_stamp")
    facts = stamp.column_facts(lake.table("clips"), "video_signals")
    assert facts["sila.scorer.aesthetic"] == "none" and facts["sila.scorer.dover"] == "none"
    assert facts["sila.scorer.ocr"].startswith("rapidocr")
    vals = rows(lake, ["aesthetic_score", "dover_technical"]).values()
    assert all(v["aesthetic_score"] is None and v["dover_technical"] is None for v in vals)


PLUG = """
import numpy as np

def make(weights):
    scale = float(open(weights).read()) if weights else 1.0
    return lambda frames: scale * float(np.mean([f.mean() for f in frames])) / 255.0
"""


def test_pluggable_scorer_by_weights_path(tmp_path):
    """A user's aesthetic scorer (factory + weights file) fills the column; a bad path fails setup."""
    plug = tmp_path / "my_scorer.py"
    plug.write_text(PLUG)
    weights = tmp_path / "w.txt"
    weights.write_text("10")
    paths = make_video_cases(tmp_path / "m", seconds=1.0)
    stage = VideoSignals(
        aesthetic_scorer=f"{plug}:make", aesthetic_weights=str(weights), ocr="none"
    )
    stage.setup(StageContext(str(tmp_path / "no-lake")))
    row = {"video": str(paths["moving"]), "video_width": 320, "video_height": 180}
    out = stage.process_row({**row, "video_fps": 15.0, "video_duration_s": 1.0})
    assert 2.0 < out["aesthetic_score"] < 8.0 and out.get("text_area") is None
    bad = VideoSignals(aesthetic_scorer=f"{plug}:make", aesthetic_weights=str(tmp_path / "nope"))
    with pytest.raises(SilaError, match="weights not found"):
        bad.setup(StageContext(str(tmp_path / "no-lake")))


def test_undecodable_clip_is_a_row_error_naming_ffmpeg(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 2000)
    stage = VideoSignals(ocr="none")
    stage.setup(StageContext(str(tmp_path / "no-lake")))
    row = {"video": str(bad), "video_width": 320, "video_height": 180, "video_fps": 15.0}
    out = stage.compute(pa.RecordBatch.from_pylist([{**row, "video_duration_s": 1.0}]))
    assert out["video_signals_error"][0] and "ffmpeg" in out["video_signals_error"][0]
    assert out["motion_mean"] == [None]
