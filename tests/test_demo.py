"""`sila demo`, the README's first command, end to end (small corpus)."""

from __future__ import annotations

import pytest

from sila.demo.run import run_demo

pytestmark = pytest.mark.slow


def test_demo_builds_a_curated_lake(tmp_path):
    out = run_demo(str(tmp_path / "demo" / "lake"), quiet=True, small=True)
    tables = out["status"]["tables"]
    assert out["ingest"]["added"] >= 12 and out["ingest"]["failed"] == 3  # corrupt, empty, text
    src = tables["sources"]["stages"]
    assert (
        src["thumbnail"]["fragments_pending"] == 0 and src["thumbnail"]["errors"] == 2
    )  # audio files
    assert src["split"]["fragments_pending"] == 0 and src["split"]["errors"] == 0
    clips = tables["clips"]
    assert out["jobs"]["split"]["children"] > 7  # multi-shot videos give several clips
    assert out["jobs"]["windows"]["children"] == 6  # 2 egocentric x 2 windows + 2 LeRobot x 1
    assert clips["rows"] == out["jobs"]["split"]["children"] + out["jobs"]["windows"]["children"]
    assert clips["stages"]["actions"]["errors"] == 0
    assert clips["stages"]["transcode"]["errors"] == 0
    again = run_demo(str(tmp_path / "demo" / "lake"), quiet=True, small=True)
    assert again["ingest"]["added"] == 0 and all(j["rows"] == 0 for j in again["jobs"].values())
