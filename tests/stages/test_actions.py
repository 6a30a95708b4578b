"""`actions` reads each window's episode through a declared lookup: an episode appended while a
run is going gets its actions from that run, and a later run computes episodes added since."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

import sila
from tests.episode_data import generic_dataset, lerobot_v2

SILA = str(Path(sys.executable).parent / "sila")


def wait_for(pred, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def actions_of(lake: sila.Lake) -> dict[str, dict]:
    rows = lake.sql(
        "select c.id, c.start_frame, c.action_steps, c.embodiment, c.actions_error, "
        "s.embodiment as source_embodiment from clips c join sources s on c.source_id = s.id"
    ).to_pylist()
    return {r["id"]: r for r in rows}


def test_an_episode_appended_during_a_run_gets_its_actions(tmp_path):
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([str(generic_dataset(tmp_path / "a", episodes=2))])
    assert lake.run("windows")["state"] == "succeeded"
    first = set(lake.table("clips").to_table(columns=["id"])["id"].to_pylist())
    # the run stops (SIGSTOP) once it has computed its first segment: it has pinned `sources`
    job = subprocess.Popen(
        [SILA, "run", "actions", "--lake", lake.uri, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SILA_FAULT": "before_checkpoint:1:stop"},
    )  # fmt: skip
    try:
        paused = psutil.Process(job.pid)
        wait_for(lambda: paused.status() == psutil.STATUS_STOPPED, what="the run to pause")
        # a new, longer episode and its windows arrive while the run is still going
        lake.ingest([str(generic_dataset(tmp_path / "b", episodes=1, frames=65))])
        assert lake.run("windows")["state"] == "succeeded"
        assert job.poll() is None and paused.status() == psutil.STATUS_STOPPED
        os.kill(job.pid, signal.SIGCONT)
        out, err = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err
    record = json.loads(out)
    rows = actions_of(lake)
    late = set(rows) - first
    assert len(late) == 3  # 65 frames: three windows of 20
    assert record["progress"]["rows"] == len(rows)  # that run computed the late windows too
    for cid in late:
        r = rows[cid]
        assert r["embodiment"] == "egocentric" and r["actions_error"] is None
        assert r["action_steps"] == (19 if r["start_frame"] == 0 else 20)


def test_a_later_run_computes_episodes_added_since(tmp_path):
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([str(generic_dataset(tmp_path / "a", episodes=2))])
    assert lake.run("windows")["state"] == "succeeded"
    assert lake.run("actions")["state"] == "succeeded"
    lake.ingest([str(lerobot_v2(tmp_path / "robot"))])
    assert lake.run("windows")["state"] == "succeeded"
    job = lake.run("actions")
    assert job["state"] == "succeeded" and job["progress"]["rows"] == 2  # the robot windows only
    rows = actions_of(lake)
    robot = [r for r in rows.values() if r["source_embodiment"] == "robot"]
    assert len(robot) == 2 and all(r["embodiment"] == "robot" for r in robot)
    acts = lake.sql("select actions from clips where embodiment = 'robot'").to_pylist()
    # lerobot_v2 episodes have 30 frames: one window, frames 0-20, 19 steps
    assert all(np.asarray(a["actions"]).shape == (19, 67) for a in acts)
