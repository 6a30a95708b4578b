"""Nothing loaded when there is nothing to do: `sila run split` and a pipeline re-run judge the
work from metadata before any setup, so a re-run imports no torch and ends in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import sila

PROBE = """
import json, sys, time
t = time.monotonic()
import sila
lake = sila.Lake(sys.argv[1])
if sys.argv[2] == "run":
    out = lake.run("split")
    out = {"message": out["message"], "state": out["state"]}
else:
    rec = lake.pipeline(sys.argv[2])
    out = {"ok": rec["ok"], "ran": rec["ran"]}
out["torch"] = "torch" in sys.modules
out["seconds"] = time.monotonic() - t
print(json.dumps(out))
"""


def _probe(lake: sila.Lake, what: str) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, lake.uri, what], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_model_stage_with_nothing_to_do_imports_no_torch(corpus, tmp_path):
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([corpus["static.mp4"]])
    recipe = tmp_path / "r.toml"
    recipe.write_text('[pipeline]\nstages = ["split", "transcode"]\n')
    first = lake.pipeline(str(recipe), concurrent=False)
    assert first["ok"] and first["ran"] == ["split", "transcode"], first
    jobs = len(lake.jobs())
    t = time.monotonic()
    run = _probe(lake, "run")
    assert run["state"] == "succeeded" and run["message"].startswith("nothing to do")
    assert run["torch"] is False
    again = _probe(lake, str(recipe))
    assert again == {**again, "ok": True, "ran": [], "torch": False}
    assert again["seconds"] < 5
    assert time.monotonic() - t < 30
    assert len(lake.jobs()) == jobs + 1  # the direct `run` writes one record; the pipeline none
