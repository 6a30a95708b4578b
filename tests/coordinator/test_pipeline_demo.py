"""The demo recipe on a lake of plain videos (no episodes): the episode stages have nothing to
read and are skipped with their reasons, every other stage succeeds, and a re-run with nothing
to do starts no job, writes no job record, imports no torch and ends in under 5 s."""

from __future__ import annotations

import json
import subprocess
import sys

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
    probe = (
        "import json, sys, time\n"
        "t = time.monotonic()\n"
        "import sila\n"
        "rec = sila.Lake(sys.argv[1]).pipeline('demo', random_weights=True)\n"
        "print(json.dumps({'ok': rec['ok'], 'ran': rec['ran'], 'torch': 'torch' in sys.modules,"
        " 'seconds': time.monotonic() - t}))\n"
    )
    again = subprocess.run([sys.executable, "-c", probe, lake.uri], capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    rerun = json.loads(again.stdout.strip().splitlines()[-1])
    assert rerun["ok"] and rerun["ran"] == [] and len(lake.jobs()) == jobs
    assert rerun["torch"] is False and rerun["seconds"] < 5  # nothing loaded: nothing to do
