"""`sila status --json` has one documented schema (docs/status-json.md): pinned here."""

from __future__ import annotations

import json
import subprocess

import pyarrow as pa
import pyarrow.compute as pc

import sila
from tests.conftest import BIN

STAGE_KEYS = {
    "fragments_done",
    "fragments_pending",
    "fragments_partial",
    "fragments_stale",
    "fragments_deferred",
    "deferred_on",
    "errors",
    "version",
    "current_version",
    "stale_fragments",
    "coverage",
    "columns",
}


class Half(sila.Stage):
    name = "half"
    table = "nums"
    inputs = ["x"]
    version = "1"
    outputs = [pa.field("h", pa.float64())]

    def compute(self, batch):
        xs = batch["x"].to_pylist()
        if 7.0 in xs and len(xs) > 1:
            raise sila.RowError("isolate")
        if xs == [7.0]:
            raise sila.RowError("seven")
        return {"h": pc.divide(batch["x"], 2.0)}


def test_status_json_schema(nums):
    nums.run(Half, where="x < 150")
    out = subprocess.run(
        [str(BIN / "sila"), "status", "--lake", nums.uri, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    st = json.loads(out.stdout)
    assert st["schema"] == "sila.status/1"
    assert set(st) >= {"schema", "lake", "tables", "leases", "jobs"}
    t = st["tables"]["nums"]
    assert set(t) >= {"rows", "fragments", "version", "stages"}
    s = t["stages"]["half"]
    assert set(s) >= STAGE_KEYS
    counts = [s[k] for k in STAGE_KEYS if k.startswith("fragments_")]
    assert sum(counts) == t["fragments"] == 6
    assert (s["fragments_done"], s["fragments_partial"], s["errors"]) == (1, 5, 1)
    assert s["columns"]["h"] == {
        "type": "double",
        "version": "1",
        "role": "output",
        "row_errors": None,
    }
    assert s["columns"]["half_error"]["row_errors"] == 1
    (job,) = st["jobs"]
    assert job["where"] == "x < 150" and job["log"].endswith(f"_sila/jobs/{job['job']}.log")
    assert {"fragments_deferred", "row_failures", "checkpoints_discarded"} <= set(job["progress"])
