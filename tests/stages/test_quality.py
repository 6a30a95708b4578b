"""Decision stages: reasons answer "why dropped" in one SQL query; a changed threshold re-runs the
decision only, never the signals; `sila status` shows keep rates; the filter base's contract."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pyarrow as pa
import pytest
from sila.stages.quality import Quality

from sila.filters import Filter, Verdict, as_verdict, rules_digest
from tests.conftest import BIN
from tests.stages.filter_lake import build, rows

REASONS_SQL = (
    "select reason, count(*) as n from clips, unnest(quality_reasons) t(reason) "
    "group by reason order by reason"
)


@pytest.fixture(scope="module")
def flake(tmp_path_factory):
    return build(str(tmp_path_factory.getbasetemp() / "filters"))


def expected_reasons(lake) -> Counter:
    got = rows(lake, ["quality_reasons"])
    return Counter(r for v in got.values() for r in v["quality_reasons"])


def test_rejections_by_reason_in_one_query(flake):
    lake, _ = flake
    res = lake.sql(REASONS_SQL).to_pylist()
    assert {r["reason"]: r["n"] for r in res} == dict(expected_reasons(lake))
    assert {"static", "dark", "split_screen", "rotated"} <= {r["reason"] for r in res}
    # the same from the command line, as a user types it
    out = subprocess.run(
        [str(BIN / "sila"), "sql", REASONS_SQL, "--lake", lake.uri, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert {r["reason"]: r["n"] for r in json.loads(out.stdout)["rows"]} == dict(
        expected_reasons(lake)
    )


def test_status_shows_keep_rates(flake):
    lake, _ = flake
    st = lake.status()["tables"]["clips"]["stages"]
    q = st["quality"]["keep"]
    kept = lake.sql("select count(*) n from clips where quality_keep").to_pylist()[0]["n"]
    assert q["kept"] == kept and q["kept"] + q["rejected"] + q["undetermined"] == 14
    assert q["keep_rate"] == pytest.approx(kept / (q["kept"] + q["rejected"]), abs=1e-3)
    a = st["audio"]["keep"]
    assert a["undetermined"] > 0  # no face / lip-sync model here: undetermined, not rejected
    out = subprocess.run(
        [str(BIN / "sila"), "status", "--lake", lake.uri],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert f"quality: keeps {q['keep_rate']:.0%} ({q['kept']} kept" in out.stdout


def test_threshold_change_reruns_the_decision_only(flake):
    lake, ids = flake
    before = rows(lake, ["motion_mean", "quality_keep"])
    sig_version = lake.table("clips").schema.field("motion_mean").metadata[b"sila.stage_version"]
    q_version = lake.table("clips").schema.field("quality_keep").metadata[b"sila.stage_version"]
    job = lake.run("quality", settings={"min_motion": 1e6})  # everything is "static" now
    assert job["state"] == "succeeded" and job["progress"]["rows"] == 14
    after = rows(lake, ["motion_mean", "quality_keep", "quality_reasons"])
    assert all(not r["quality_keep"] and "static" in r["quality_reasons"] for r in after.values())
    st = lake.status()["tables"]["clips"]["stages"]["quality"]
    assert (st["fragments_stale"], st["fragments_pending"]) == (0, 0)  # other rules, not stale code
    schema = lake.table("clips").schema
    assert schema.field("quality_keep").metadata[b"sila.stage_version"] != q_version
    assert schema.field("motion_mean").metadata[b"sila.stage_version"] == sig_version
    assert {k: v["motion_mean"] for k, v in after.items()} == {
        k: v["motion_mean"] for k, v in before.items()
    }
    sig = lake.run("video_signals", settings={"ocr_frames": 1})
    assert sig["progress"]["fragments_total"] == 0  # the signals were not touched
    back = lake.run("quality")  # the recipe's rules again: the first answers again
    assert back["progress"]["rows"] == 14
    assert {k: v["quality_keep"] for k, v in rows(lake, ["quality_keep"]).items()} == {
        k: v["quality_keep"] for k, v in before.items()
    }
    assert lake.run("quality")["progress"]["fragments_total"] == 0  # same rules: nothing to do


def test_recipe_decides_reject_or_flag(flake, tmp_path):
    """Moving `text_overlay` from flag to reject in a recipe file rejects the text clip."""
    lake, ids = flake
    recipe = tmp_path / "strict.toml"
    recipe.write_text('[stages.quality]\nreject = ["text_overlay", "static"]\nflag = []\n')
    lake.run("quality", recipe=str(recipe))
    got = rows(lake, ["quality_keep", "quality_reasons", "quality_flags"])
    assert got[ids["text_overlay"]]["quality_reasons"] == ["text_overlay"]
    assert got[ids["blurred"]]["quality_keep"] is True  # blur: in neither list, so flagged
    assert got[ids["blurred"]]["quality_flags"] == ["blur"]
    lake.run("quality")
    assert rows(lake, ["quality_keep"])[ids["text_overlay"]]["quality_keep"] is True


# -- the filter base --------------------------------------------------------------------------
def test_answers_normalise():
    assert as_verdict(True) == Verdict(True)
    assert as_verdict((False, "too dark")) == Verdict(False, ["too dark"])
    assert as_verdict((False, ["a", "b"])).reasons == ["a", "b"]
    assert as_verdict(None).keep is None


def test_rules_digest_ignores_order_and_number_spelling():
    assert rules_digest({"a": 1, "b": [1, 2]}) == rules_digest({"b": [1.0, 2.0], "a": 1.0})
    assert rules_digest({"a": 1}) != rules_digest({"a": 2})


def test_a_user_filter_in_a_few_lines():
    class Loud(Filter):
        name = "loud"
        inputs = ["max_abs"]
        settings = {"min": 0.1}

        def filter(self, row):
            return row["max_abs"] >= self.config["min"] or (False, "quiet")

    assert [f.name for f in Loud.outputs] == ["loud_keep", "loud_reasons"]
    out = Loud(min=0.5).compute(pa.RecordBatch.from_pylist([{"max_abs": 0.9}, {"max_abs": 0.2}]))
    assert out["loud_keep"] == [True, False] and out["loud_reasons"] == [[], ["quiet"]]
    assert Loud(min=0.5).resolved_version() == Loud.rules_version({"min": 0.5})
    assert Loud.resolved_version() == Loud.rules_version({"min": 0.1})  # the defaults


def test_quality_tags_from_rules():
    q = Quality(min_sharpness=100.0)
    row = {"sharpness": 99.0, "motion_mean": 3.0, "aspect": 1.0, "video_artifacts": []}
    assert q.filter(row) == Verdict(True, [], ["blur"])
    assert q.filter({**row, "video_artifacts": None}).reasons == ["no_signals"]
    assert q.filter({**row, "video_signals_error": "ffmpeg failed"}).reasons == ["signals_error"]
    assert Quality(max_aspect=2.0).filter({**row, "aspect": 0.25}).reasons == ["extreme_aspect"]


def test_audio_only_clip_is_undetermined_as_no_video():
    from sila.stages.signals.video_signals import VideoSignals

    out = VideoSignals(ocr="none").process_row(
        {"video": "/x.m4a", "video_width": None, "video_height": None}
    )
    assert out == {"video_artifacts": ["no_video"]}
    assert Quality().filter(out) == Verdict(None, ["no_video"])  # not a video decision


def test_quality_recipe_spells_out_the_stage_defaults():
    """datasets/quality.toml is the paper's policy as the stages' defaults: running it changes
    no version, so nothing is recomputed."""
    from sila.stages.audio import Audio
    from sila.stages.signals.video_signals import VideoSignals

    from sila.recipe import load_recipe, stage_settings

    recipe = load_recipe("quality")
    for cls in (Quality, Audio, VideoSignals):
        conf = stage_settings(recipe, cls.name, None)
        assert conf and all(cls.settings[k] == v for k, v in conf.items()), cls.name
        assert cls.rules_version(conf) == cls.rules_version(cls.settings)
