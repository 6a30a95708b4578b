"""What operators see: live leases in `sila status`, job records, and `sila compact`'s refusal."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pyarrow as pa
from sila.coordinator.leases import LeaseStore

import sila
from tests.conftest import BIN


class Inc(sila.Stage):
    name = "inc"
    table = "nums"
    inputs = ["x"]
    outputs = [pa.field("inc", pa.float64())]
    version = "1"

    def compute(self, batch):
        return {"inc": [x + 1 for x in batch["x"].to_pylist()]}


def test_status_shows_live_leases_and_compact_refuses(nums):
    ls = LeaseStore(nums.store, ttl=30)
    lease = ls.acquire("nums", "inc", "0-abc", owner="host:1:x", job="job-1")
    lease.segments_done = 3
    ls.renew(lease)  # a renewal is an exclusive create of the next generation
    st = nums.status()
    (live,) = st["leases"]
    assert (live["stage"], live["owner"], live["segments_done"], live["gen"]) == (
        "inc",
        "host:1:x",
        3,
        2,
    )
    assert live["age_s"] >= 0 and live["heartbeat_lag_s"] >= 0
    res = subprocess.run(
        [str(BIN / "sila"), "status", "--lake", nums.uri], capture_output=True, text=True
    )
    assert "host:1:x" in res.stdout
    res = subprocess.run(
        [str(BIN / "sila"), "compact", "--lake", nums.uri], capture_output=True, text=True
    )
    assert res.returncode == 1 and "lease(s) are live" in res.stderr
    ls.release(lease)
    res = subprocess.run(
        [str(BIN / "sila"), "compact", "--lake", nums.uri, "--json"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tables"]["nums"]["fragments_removed"] == 6


def test_job_records_tell_scripts_what_happened(nums):
    job = nums.run(Inc)
    path = os.path.join(nums.uri, "_sila", "jobs", f"{job['job']}.json")
    rec = json.loads(Path(path).read_text())
    assert rec["state"] == "succeeded" and rec["stage"] == "inc" and rec["progress"]["rows"] == 600
    assert rec["started_at"] <= rec["heartbeat_at"] <= time.time() and rec["ended_at"] is not None
    assert [j["job"] for j in nums.status()["jobs"]][-1] == job["job"]


def test_a_failed_job_is_recorded_as_failed(nums):
    class Broken(Inc):
        name = "broken"
        outputs = [pa.field("b", pa.float64())]

        def compute(self, batch):
            raise RuntimeError("GPU fell off the bus")

    try:
        nums.run(Broken)
    except sila.StageFailed:
        pass
    rec = nums.status()["jobs"][-1]
    assert rec["state"] == "failed" and "GPU fell off the bus" in rec["message"]
    assert nums.status()["leases"] == []  # abandoned fragments are released at once
