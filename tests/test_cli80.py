"""The first-hour commands at COLUMNS=80: stage names whole, no Python warning, no raw dict,
no line wider than the terminal."""

from __future__ import annotations

import os
import re
import subprocess

from rich.console import Console

import sila
from tests.conftest import BIN
from tests.test_whatif import STAGE

NAMES = [
    "transcode", "actions", "assign_split", "normalize", "audio_signals", "video_signals",
    "fingerprint", "camera_motion", "audio", "fpdedup", "embed", "quality", "tag", "dedup",
    "user_stage_name",
]  # fmt: skip


def _stage(i: int) -> dict:
    return {
        "fragments_done": 2,
        "fragments_pending": i % 3,
        "fragments_partial": 0,
        "fragments_stale": 2 if i % 4 == 0 else 0,
        "fragments_deferred": 1 if i == 5 else 0,
        "deferred_on": ["transcode"] if i == 5 else [],
        "errors": 1234 * (i % 2),
        "version": f"1+r{i:010d}",
        "current_version": "3" if i % 4 == 0 else f"1+r{i:010d}",
        "stale_fragments": 2 if i % 4 == 0 else 0,
        "random_weights": i in (10, 12),
        "coverage": 0.5,
    }


def test_status_table_keeps_stage_names_whole_at_80_columns():
    from sila.cli.status import stage_notes, stage_table

    t = {"stages": {n: _stage(i) for i, n in enumerate(NAMES)}}
    console = Console(width=80, record=True, color_system=None)
    console.print(stage_table(t))
    for line in stage_notes(t):
        console.print(line)
    text = console.export_text()
    firsts = [ln.split()[0] for ln in text.splitlines() if ln.strip()]
    assert [w for w in firsts if w in NAMES][: len(NAMES)] == NAMES  # whole, in order
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    assert "sila run transcode --recompute" in text and "embed has RANDOM WEIGHTS" in text


def test_first_hour_commands_read_well_at_80_columns(lake, corpus):
    lake.ingest([p for n, p in corpus.items() if n != "_dir"])
    assert lake.run(STAGE, settings={"min_duration_s": 1.5})["state"] == "succeeded"
    some = lake.sql("select id from sources where length_keep = false limit 1").to_pylist()[0]
    env = {**os.environ, "COLUMNS": "80"}
    for args in (
        ["status"],
        ["whatif", "length", "--set", "length.min_duration_s=2.5"],
        ["explain", some["id"]],
        ["errors"],
        ["errors", "--stage", "length"],
    ):
        res = subprocess.run(
            [str(BIN / "sila"), *args, "--lake", lake.uri],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        shown = f"sila {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
        assert res.returncode == 0, shown
        assert not re.search(r"Warning|warnings\.warn|Traceback", res.stderr + res.stdout), shown
        assert not re.search(r"\{'|': ", res.stdout), shown  # no raw Python dict
        assert max(map(len, res.stdout.splitlines()), default=0) <= 80, shown
        assert "…" not in res.stdout, shown
    missing = subprocess.run(
        [str(BIN / "sila"), "status", "--lake", str(lake.uri) + "-typo"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode == 1 and "no lake at" in missing.stderr
    assert not os.path.exists(str(lake.uri) + "-typo")  # said so, created nothing
    assert isinstance(sila.Lake, type)
