"""Leases as users meet them between runs: a paused worker resumed after its successor took
over, an object store that fails mid-renewal, and lease files that must not pile up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest
from sila.coordinator.leases import LeaseStore
from sila.coordinator.store import Store

import sila
from tests.conftest import make_numbers, sila_run_cmd

STAGE = """
import os, time
import pyarrow as pa
from sila import Stage

class Mult(Stage):
    name = "mult"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("y", pa.float64())]
    segment_rows = 1000  # one segment per fragment: no checkpoint to hand over

    def compute(self, batch):
        time.sleep(float(os.environ.get("SILA_TEST_SLEEP", "0")))
        k = float(os.environ["SILA_TEST_MULT"])  # which job computed a row shows in its value
        return {"y": [x * k for x in batch["x"].to_pylist()]}
"""


def wait_for(pred, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_paused_worker_commits_nothing_over_its_successor(tmp_path):
    """SIGSTOP a worker right before it commits, past its lease TTL; a second job takes the
    fragment over; SIGCONT the first while the second still computes: the first must commit
    nothing, and say so in its job record."""
    (tmp_path / "mult.py").write_text(STAGE)
    spec = f"{tmp_path / 'mult.py'}:Mult"
    lake = sila.Lake(tmp_path / "lake").init()
    make_numbers(lake, 1, 100)
    first = subprocess.Popen(
        sila_run_cmd(lake, spec),
        env={**os.environ, "SILA_TEST_MULT": "2", "SILA_FAULT": "during_commit:1:stop"},
        stdout=subprocess.PIPE,
        text=True,
    )
    paused = psutil.Process(first.pid)
    wait_for(lambda: paused.status() == psutil.STATUS_STOPPED, what="the first job to pause")
    time.sleep(2.0)  # past its 1.5 s TTL: its heartbeat is paused too
    second = subprocess.Popen(
        sila_run_cmd(lake, spec),
        env={**os.environ, "SILA_TEST_MULT": "3", "SILA_TEST_SLEEP": "3"},
        stdout=subprocess.PIPE,
        text=True,
    )
    leases = LeaseStore(lake.store)
    wait_for(
        lambda: any(f":{second.pid}:" in x["owner"] for x in leases.live()),
        what="the second job to take the fragment over",
    )
    version = lake.table("nums").version
    os.kill(first.pid, signal.SIGCONT)  # resumes inside its commit, the successor still working
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0
    assert lake.table("nums").version == version, "the paused worker committed"
    job1 = json.loads(out)
    assert job1["progress"]["fragments_done"] == 0 and job1["progress"]["lost_leases"] == 1
    job2 = json.loads(second.communicate(timeout=60)[0])
    assert job2["state"] == "succeeded" and job2["progress"]["fragments_done"] == 1
    t = lake.table("nums").to_table(columns=["x", "y"]).to_pylist()
    assert all(r["y"] == r["x"] * 3 for r in t)  # every value is the successor's
    assert lake.store.list("leases") == []


def test_a_failed_renewal_is_not_trusted(tmp_path):
    """The object store goes away while a worker renews: the worker must not believe in the
    new expiry (nobody else could see it) and must not confirm the lease from memory."""
    from tests import s3

    server = s3.start()
    try:
        lake = sila.Lake(f"s3://{server.bucket()}/lake", storage_options=server.options).init()
        ls = LeaseStore(lake.store, ttl=0.8)
        lease = ls.acquire("nums", "mult", "0-abc", owner="me", job="j")
        expires = lease.expires_at
        server.stop()
        with pytest.raises(Exception):  # noqa: B017 - whatever the client raises for a dead store
            ls.renew(lease)
        assert lease.expires_at == expires and lease.gen == 1
        time.sleep(0.7)  # within a quarter TTL of the old expiry: memory no longer vouches
        with pytest.raises(Exception):  # noqa: B017
            ls.valid(lease)
    finally:
        if server.proc.poll() is None:
            server.stop()


def test_a_run_leaves_no_lease_files_and_a_pass_lists_only_live_ones(tmp_path, stage_file):
    path = stage_file(STAGE)
    lake = sila.Lake(tmp_path / "lake").init()
    make_numbers(lake, 30, 10)
    os.environ["SILA_TEST_MULT"] = "2"
    job = lake.run(f"{path}:Mult", workers=1)
    assert job["progress"]["fragments_done"] == 30
    assert lake.store.list("leases") == []  # 30 fragments done, nothing left to list
    left = list((tmp_path / "lake" / "_sila" / "leases").rglob("*"))
    assert [p for p in left if p.name not in ("nums", "mult")] == []  # nor any empty directory
    ls = LeaseStore(Store(lake.uri), ttl=30)
    held = ls.acquire("nums", "mult", "5-new", owner="w", job="j")
    assert ls.busy("nums", "mult") == {"5-new"} and [x["owner"] for x in ls.live()] == ["w"]
    ls.release(held, committed=True)
    assert lake.store.list("leases") == []
