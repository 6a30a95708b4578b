"""`sila explain ID` and `sila errors` on a small real lake: ingest (with its bad inputs) and a
decision stage over ingest's columns."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from sila.coordinator.ops.errors import message_class, row_errors
from sila.coordinator.ops.explain import explain, explain_lines

import sila
from tests.conftest import BIN
from tests.test_whatif import STAGE

BAD = {"corrupt.mp4", "empty.mp4", "notes.txt"}  # the corpus's files that fail at ingest


@pytest.fixture(scope="module")
def decided(tmp_path_factory, corpus) -> sila.Lake:
    lake = sila.Lake(tmp_path_factory.mktemp("explain") / "lake").init()
    lake.ingest([p for n, p in corpus.items() if n != "_dir"])
    assert lake.run(STAGE, settings={"min_duration_s": 1.5})["state"] == "succeeded"
    return lake


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [str(BIN / "sila"), *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_explain_a_rejected_row_names_its_stage_job_and_threshold(decided):
    row = decided.sql("select id from sources where length_keep = false limit 1").to_pylist()[0]
    e = explain(decided, row["id"][:10])  # a unique start of the id is enough
    assert e["id"] == row["id"] and e["verdict"] == "rejected" and e["rejected_by"] == ["length"]
    stages = {s["stage"]: s for s in e["stages"]}
    assert set(stages) == {"ingest", "length"}
    length = stages["length"]
    assert length["version"].startswith("1+r")
    assert length["job"] == decided.jobs("length")[-1]["job"] and length["written_at"] > 0
    assert length["changed_settings"] == {"min_duration_s": 1.5}
    assert {r["column"]: r["stage"] for r in length["reads"]} == {
        "duration_s": "ingest",
        "width": "ingest",
        "media_kind": "ingest",
    }
    (t,) = length["decision"]["thresholds"]
    dur = stages["ingest"]["columns"]["duration_s"]
    assert (t["tag"], t["column"], t["limit"], t["rejects"]) == (
        "too_short",
        "duration_s",
        1.5,
        True,
    )
    assert t["margin"] == pytest.approx(1.5 - dur, abs=1e-3) and t["margin"] > 0
    text = "\n".join(explain_lines(e))
    assert "REJECTED by length" in text and "< min_duration_s 1.5" in text

    out = _cli("explain", row["id"], "--lake", decided.uri, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["schema"] == "sila.explain/1"
    human = _cli("explain", row["id"], "--lake", decided.uri)
    assert human.returncode == 0 and "written by job" in human.stdout
    assert "{'" not in human.stdout and "Warning" not in human.stderr
    missing = _cli("explain", "ffffffffffff", "--lake", decided.uri)
    assert missing.returncode == 1 and "no row with id" in missing.stderr


def test_errors_lists_exactly_the_bad_inputs_with_the_fix(decided):
    report = row_errors(decided)
    assert report["rows"] == len(BAD)
    files = {os.path.basename(e["uri"]) for g in report["groups"] for e in g["examples"]}
    assert files == BAD
    assert {g["stage"] for g in report["groups"]} == {"ingest"}
    assert all("sila remove --where" in g["fix"] for g in report["groups"])
    assert row_errors(decided, "length")["rows"] == 0
    human = _cli("errors", "--lake", decided.uri)
    assert human.returncode == 0 and all(name in human.stdout for name in BAD)
    assert "fix: sila remove" in human.stdout
    unknown = _cli("errors", "--stage", "nope", "--lake", decided.uri)
    assert unknown.returncode == 1 and "no stage named 'nope'" in unknown.stderr


def test_message_class_drops_what_differs_per_row():
    a = message_class("truncated or corrupt: 'mdat' box runs 496 bytes: /a/b/x.mp4")
    b = message_class("truncated or corrupt: 'mdat' box runs 12 bytes: /c/y.mp4")
    assert a == b == "truncated or corrupt"
    assert message_class("ValueError: bad 0123456789abcdef") == "ValueError"
    assert message_class("worker crashed in fragment 3") == "worker crashed in fragment N"
