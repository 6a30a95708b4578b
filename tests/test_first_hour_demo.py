"""The first hour on the demo lake (`sila demo --small`): `sila explain` names every stage,
version and model of a clip and, for a rejected one, the threshold it crossed; `sila errors`
lists exactly the demo's bad inputs; `sila whatif` on quality equals the applied run."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from sila.demo.run import run_demo
from sila.lake import Lake
from tests.conftest import BIN

pytestmark = pytest.mark.slow

BAD_INPUTS = {"corrupt.mp4", "empty.mp4", "notes.txt"}  # what the demo's corpus breaks on purpose


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory) -> Lake:
    root = tmp_path_factory.mktemp("first_hour")
    run_demo(str(root / "demo" / "lake"), quiet=True, small=True)
    return Lake(str(root / "demo" / "lake"))


def _sila(lake: Lake, *args: str) -> dict:
    res = subprocess.run(
        [str(BIN / "sila"), *args, "--lake", lake.uri, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_explain_a_rejected_demo_clip(demo_lake):
    clip = demo_lake.sql(
        "select id from clips where quality_keep = false and len(quality_reasons) > 0 limit 1"
    ).to_pylist()[0]["id"]
    e = _sila(demo_lake, "explain", clip)
    stages = {s["stage"]: s for s in e["stages"]}
    ran = {
        f.metadata[b"sila.stage"].decode()
        for f in demo_lake.table("clips").schema
        if f.metadata and b"sila.stage" in f.metadata
    }
    assert ran <= set(stages) and "quality" in e["rejected_by"]
    for name in ran:
        s = stages[name]
        assert s["version"], name
        assert s["job"], name  # the job that wrote it
    assert stages["embed"]["random_weights"] and "RANDOM" in stages["embed"]["model"]
    assert stages["quality"]["model"] == "rules"
    d = stages["quality"]["decision"]
    crossed = [t for t in d["thresholds"] if t["rejects"]]
    assert crossed and {t["tag"] for t in crossed} <= set(d["reasons"])
    assert all(t["margin"] > 0 for t in crossed)
    assert {r["stage"] for r in stages["quality"]["reads"]} >= {"video_signals"}


def test_errors_on_the_demo_are_its_bad_inputs(demo_lake):
    report = _sila(demo_lake, "errors")
    files = {os.path.basename(e["uri"]) for g in report["groups"] for e in g["examples"]}
    assert files == BAD_INPUTS and report["rows"] == len(BAD_INPUTS)


def test_whatif_on_quality_equals_the_applied_run(demo_lake):
    out = _sila(demo_lake, "whatif", "quality", "--set", "quality.min_motion=2.0", "--apply")
    assert out["flips_total"] > 0 and out["applied"]["equals_prediction"]
    assert out["applied"]["state"] == "succeeded"
