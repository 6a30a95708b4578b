"""`sila demo`, the README's first command, end to end (small corpus)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

import sila
from sila.demo.run import run_demo
from tests.conftest import BIN

pytestmark = pytest.mark.slow


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_demo_builds_a_curated_lake_in_its_own_folder(tmp_path):
    # a user's own lake is named by $SILA_LAKE: the demo must neither write into it nor beside it
    user = tmp_path / "data"
    mine = sila.Lake(user / "lake").init()
    mine.create_table("notes", pa.table({"id": ["a"]}))
    before = _tree(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run(
        [str(BIN / "sila"), "demo", "--small", "--json"],
        cwd=work,
        env={**os.environ, "SILA_LAKE": str(user / "lake")},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert Path(out["lake"]).resolve() == (work / "demo" / "lake").resolve()
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("work/demo/")} == before
    assert sorted(os.listdir(tmp_path)) == ["data", "work"] and os.listdir(work) == ["demo"]
    tables = out["status"]["tables"]
    assert out["ingest"]["added"] >= 12 and out["ingest"]["failed"] == 3  # corrupt, empty, text
    src = tables["sources"]["stages"]
    # audio files are outside thumbnail's where (pictures only): no row errors
    assert src["thumbnail"]["fragments_pending"] == 0 and src["thumbnail"]["errors"] == 0
    assert src["split"]["fragments_pending"] == 0 and src["split"]["errors"] == 0
    clips = tables["clips"]
    assert out["jobs"]["split"]["children"] > 7  # multi-shot videos give several clips
    assert out["jobs"]["windows"]["children"] == 6  # 2 egocentric x 2 windows + 2 LeRobot x 1
    assert clips["rows"] == out["jobs"]["split"]["children"] + out["jobs"]["windows"]["children"]
    assert clips["stages"]["actions"]["errors"] == 0
    assert clips["stages"]["transcode"]["errors"] == 0
    again = run_demo(str(work / "demo" / "lake"), quiet=True, small=True)
    # the suggested export goes through: every decision it selects on is computed
    man = sila.Lake(str(work / "demo" / "lake")).export(str(work / "demo" / "shards"))
    assert man["samples"] > 0 and "pending" not in man
    assert again["ingest"]["added"] == 0 and all(j["rows"] == 0 for j in again["jobs"].values())
    assert Path(again["media"]).resolve() == (work / "demo" / "media").resolve()
