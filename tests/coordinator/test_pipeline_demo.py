"""The demo recipe on a lake of plain videos (no episodes): the episode stages have nothing to
read and are skipped with their reasons, every other stage succeeds, and a re-run with nothing
to do starts no job and writes no job record."""

from __future__ import annotations

import json
import subprocess

import pytest

import sila
from tests.conftest import BIN


@pytest.mark.slow
def test_demo_recipe_on_plain_videos_skips_the_episode_stages(corpus, tmp_path):
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([corpus["static.mp4"]])
    cmd = [str(BIN / "sila"), "pipeline", "run", "demo", "--lake", lake.uri, "--json"]
    res = subprocess.run([*cmd, "--allow-random-weights"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    states = {s["stage"]: s["state"] for s in out["stages"]}
    assert {s for s, v in states.items() if v == "skipped"} == {
        "windows",
        "actions",
        "normalize",
        "caption",  # no model endpoint here: said, and skipped
    }, out["skipped"]
    assert "episode_frames" in out["skipped"]["windows"]
    assert "lookup column(s) embodiment" in out["skipped"]["actions"]
    assert all(v == "succeeded" for s, v in states.items() if s not in out["skipped"])
    jobs = len(lake.jobs())
    again = subprocess.run([*cmd, "--allow-random-weights"], capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["ok"] and rerun["ran"] == [] and len(lake.jobs()) == jobs
