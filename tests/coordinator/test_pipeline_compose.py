"""Pipelines that compose: overlap, gates that hold, stages with nothing to read, no-op re-runs.

User stages on a numeric table keep these fast: `double` (slow) -> `plus` (overlaps it), a
filter writing `odd_keep` and a gated stage after it, and `windows` reading a column no stage
writes here (an episode column: skipped with its reason)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from sila.coordinator.ops.pipeline import plan, plan_pipeline, run_pipeline

import sila
from tests.conftest import BIN, make_numbers

STAGES = """
import os, time
import pyarrow as pa
import pyarrow.compute as pc
import sila

def slow():
    return float(os.environ.get("PIPE_SLOW", "0"))  # read per batch: set after import

class Double(sila.Stage):
    name = "double"; table = "nums"; inputs = ["x"]; version = "1"; segment_rows = 10
    outputs = [pa.field("double", pa.float64())]
    def compute(self, batch):
        time.sleep(slow())
        return {"double": pc.multiply(batch["x"], 2)}

class Plus(sila.Stage):
    name = "plus"; table = "nums"; inputs = ["double"]; version = "1"; segment_rows = 10
    outputs = [pa.field("plus", pa.float64())]
    def compute(self, batch):
        return {"plus": pc.add(batch["double"], 1)}

class Odd(sila.Stage):
    name = "odd"; table = "nums"; inputs = ["x"]; version = "1"; segment_rows = 10
    outputs = [pa.field("odd_keep", pa.bool_())]
    def compute(self, batch):
        time.sleep(slow())
        return {"odd_keep": [int(x) % 2 == 1 for x in batch["x"].to_pylist()]}

class Gated(sila.Stage):
    name = "gated"; table = "nums"; inputs = ["x"]; version = "1"; segment_rows = 10
    outputs = [pa.field("gated", pa.float64())]
    def gate(self):
        return "auto"
    def model_calls_per_row(self):
        return 2
    def compute(self, batch):
        return {"gated": pc.multiply(batch["x"], 10)}

class Windows(sila.Stage):
    name = "windows"; table = "nums"; inputs = ["episode"]; version = "1"
    outputs = [pa.field("window", pa.string())]
    def compute(self, batch):
        return {"window": [str(e) for e in batch["episode"].to_pylist()]}
"""


@pytest.fixture
def recipe(tmp_path):
    code = tmp_path / "pipe_stages.py"
    code.write_text(STAGES)
    path = tmp_path / "pipe.toml"
    names = ["Gated", "Windows", "Plus", "Odd", "Double"]  # out of order on purpose
    path.write_text("[pipeline]\nstages = [" + ", ".join(f'"{code}:{n}"' for n in names) + "]\n")
    return path


def _lake(tmp_path, name: str, fragments: int = 4) -> sila.Lake:
    lk = sila.Lake(tmp_path / name).init()
    make_numbers(lk, fragments=fragments, rows_per_fragment=20)
    return lk


def _computed(lk: sila.Lake) -> list[dict]:
    cols = ["id", "double", "plus", "odd_keep", "gated"]
    return sorted(lk.table("nums").to_table(columns=cols).to_pylist(), key=lambda r: r["id"])


def test_gated_stage_is_ordered_after_its_decisions_and_overlap_is_planned(tmp_path, recipe):
    lk = _lake(tmp_path, "plan")
    nodes = {n.name: n for n in plan(_specs(recipe))}
    assert "odd" in nodes["gated"].after  # its gate: "auto" reads odd_keep
    dry = {r["stage"]: r for r in plan_pipeline(lk, str(recipe))["stages"]}
    assert dry["plus"]["start"] == "overlaps upstream"
    assert dry["gated"]["start"] == "overlaps upstream"  # deferred per fragment on odd_keep
    assert dry["double"]["start"] == "starts at once"
    assert dry["windows"]["now"].startswith("would skip: nothing to do: input column(s) episode")
    seq = {r["stage"]: r for r in plan_pipeline(lk, str(recipe), concurrent=False)["stages"]}
    assert seq["plus"]["start"] == "waits for upstream end (sequential)"
    assert not list(lk.store.list("jobs"))  # judged from metadata: no job, no record


def _specs(recipe) -> list[str]:
    text = recipe.read_text()
    return [s.strip().strip('"') for s in text.split("[", 2)[2].split("]")[0].split(",")]


def test_demo_dry_run_names_the_global_wait_and_loads_no_model(tmp_path):
    lk = sila.Lake(tmp_path / "empty").init()
    code = (
        "import sys, json, sila\n"
        "from sila.coordinator.ops.pipeline import plan_pipeline\n"
        "d = plan_pipeline(sila.Lake(sys.argv[1]), 'demo')\n"
        "print(json.dumps({'stages': d['stages'], 'torch': 'torch' in sys.modules}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, lk.uri], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    rows = {r["stage"]: r for r in out["stages"]}
    assert rows["dedup"]["start"] == "waits for upstream end (global)"
    assert {"quality", "audio", "dedup", "fpdedup"} <= set(rows["caption"]["after"])
    names = [r["stage"] for r in out["stages"]]
    assert names.index("caption") > max(names.index(s) for s in ("quality", "dedup", "fpdedup"))
    assert rows["thumbnail"]["now"].startswith("would skip: nothing to do: table")


def test_downstream_overlaps_a_running_upstream_and_missing_inputs_skip(tmp_path, recipe):
    lk = _lake(tmp_path, "overlap", fragments=6)
    os.environ["PIPE_SLOW"] = "0.3"
    try:
        res = run_pipeline(lk, str(recipe), poll_s=0.1)
    finally:
        os.environ.pop("PIPE_SLOW")
    by = {s["stage"]: s for s in res["stages"]}
    assert res["ok"], res
    assert by["windows"]["state"] == "skipped"
    assert "input column(s) episode do not exist" in by["windows"]["message"]
    jobs = {j["job"]: j for j in lk.jobs()}
    double_end = max(jobs[j]["ended_at"] for j in by["double"]["jobs"])
    plus_start = min(jobs[j]["started_at"] for j in by["plus"]["jobs"])
    assert plus_start < double_end  # took committed fragments while double went on
    assert by["plus"]["rows"] == 120 and by["double"]["rows"] == 120
    # the gate held: no row a decision rejects was computed, and the saving is counted
    rows = _computed(lk)
    assert all((r["gated"] is None) == (r["odd_keep"] is False) for r in rows)
    assert by["gated"]["model_calls_saved"] == 60 * 2
    assert set(res["ran"]) == {"double", "plus", "odd", "gated"}


def test_rerun_with_nothing_to_do_starts_no_job_and_skip_is_honoured(tmp_path, recipe):
    lk = _lake(tmp_path, "rerun")
    first = run_pipeline(lk, str(recipe), skip=["gated"], poll_s=0.1)
    assert first["ok"] and first["skipped"]["gated"] == "skipped with --skip"
    assert "gated" not in lk.table("nums").schema.names
    before = len(lk.jobs())
    t = time.monotonic()
    again = run_pipeline(lk, str(recipe), skip=["gated"], poll_s=0.1)
    assert again["ok"] and again["ran"] == [] and len(lk.jobs()) == before
    assert time.monotonic() - t < 5
    assert all(s["jobs"] == [] for s in again["stages"])
    # the pipeline's own record says what ran
    rec = json.loads(lk.store.get(again["record"]))
    assert rec["ran"] == [] and rec["skipped"]["gated"] == "skipped with --skip"


def test_cli_skip_and_dry_run(tmp_path, recipe):
    lk = _lake(tmp_path, "cli")
    sila_bin = str(BIN / "sila")
    dry = subprocess.run(
        [sila_bin, "pipeline", "run", str(recipe), "--lake", lk.uri, "--dry-run", "--json"],
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert {r["stage"] for r in json.loads(dry.stdout)["stages"]} >= {"double", "gated"}
    assert not list(lk.store.list("jobs"))  # a dry run writes nothing
    cmd = [sila_bin, "pipeline", "run", str(recipe), "--lake", lk.uri, "--json"]
    res = subprocess.run([*cmd, "--skip", "gated", "--skip", "odd"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert set(out["skipped"]) == {"gated", "odd", "windows"}


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_equals_sequential_row_by_row(tmp_path, recipe, workers):
    seq = _lake(tmp_path, "seq")
    run_pipeline(seq, str(recipe), concurrent=False)
    con = _lake(tmp_path, f"con{workers}")
    os.environ["PIPE_SLOW"] = "0.05"
    try:
        res = run_pipeline(con, str(recipe), workers=workers, poll_s=0.1)
    finally:
        os.environ.pop("PIPE_SLOW")
    assert res["ok"], res
    assert _computed(con) == _computed(seq)
    assert pa.types.is_float64(con.table("nums").schema.field("gated").type)
