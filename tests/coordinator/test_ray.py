"""The Ray executor on a real local Ray: same table as inline, per-pool metrics, bounded
in-flight work with a slow compute pool, and actors killed mid-segment losing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import psutil
import pyarrow as pa
import pytest
from sila.coordinator.executors.ray_executor import plan_pools

import sila
from tests.conftest import BIN, make_numbers

pytestmark = pytest.mark.slow

STAGES = '''
import os, time, uuid
from pathlib import Path
import pyarrow as pa
from sila import Stage, Resources

MARKS = Path(os.environ["SILA_TEST_MARKS"])

class Three(Stage):
    """Three real steps: preprocess (CPU), a slow compute, postprocess."""
    name = "three"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("z", pa.float64())]
    segment_rows = 50
    preprocess_resources = Resources(cpus=0.5)   # different resources: three separate pools
    postprocess_resources = Resources(cpus=0.5)

    def preprocess(self, batch):
        mark = MARKS / f"pending-{uuid.uuid4().hex}"
        mark.touch()                        # a segment loaded and waiting for compute
        return (str(mark), batch["x"].to_numpy())

    def compute(self, prepared):
        mark, xs = prepared
        waiting = len(list(MARKS.glob("pending-*")))
        with open(MARKS / "depth.log", "a") as fh:
            fh.write(f"{waiting}\\n")
        (MARKS / f"pid-{os.getpid()}").touch()
        time.sleep(float(os.environ.get("SILA_TEST_SLEEP", "0.05")))
        os.remove(mark)
        return xs * 10

    def postprocess(self, ys):
        return {"z": ys + 1}

class Dies(Stage):
    """Its worker process dies on every segment holding x == 13."""
    name = "dies"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("w", pa.float64())]
    segment_rows = 20
    def compute(self, batch):
        xs = batch["x"].to_pylist()
        if 13.0 in xs:
            os._exit(1)
        return {"w": [x + 0.5 for x in xs]}
'''


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory, _ray_cluster_session):
    import ray

    root = tmp_path_factory.mktemp("ray")
    (root / "stages.py").write_text(STAGES)
    marks = root / "marks"
    marks.mkdir()
    os.environ["SILA_TEST_MARKS"] = str(marks)  # before the actors start: they inherit it
    if not ray.is_initialized():
        ray.init(address=_ray_cluster_session.address, log_to_driver=False)
    yield root, marks
    ray.shutdown()  # later modules start from no connection (see conftest.ray_cluster)


def expected(lake):
    t = lake.table("nums").to_table(columns=["x", "z"])
    return all(z == x * 10 + 1 for x, z in zip(t["x"].to_pylist(), t["z"].to_pylist(), strict=True))


def test_ray_matches_inline_and_reports_pools(tmp_path, ray_env):
    root, marks = ray_env
    spec = f"{root / 'stages.py'}:Three"
    a, b = sila.Lake(tmp_path / "a").init(), sila.Lake(tmp_path / "b").init()
    make_numbers(a, 6, 100)
    make_numbers(b, 6, 100)
    job = a.run(spec, executor="ray")
    b.run(spec, executor="inline")
    assert job["state"] == "succeeded" and job["progress"]["rows"] == 600
    assert a.table("nums").to_table().sort_by("x").equals(b.table("nums").to_table().sort_by("x"))
    pools = job["metrics"]["pools"]
    assert set(pools) == {"preprocess", "compute", "postprocess"}
    for p in pools.values():
        assert (
            p["actors"] >= 1
            and p["rows"] == 600
            and 0 <= p["busy_fraction"] <= 1
            and p["rows_per_s"] > 0
        )
    assert (
        sum(p["actors"] * p["cpus_each"] for p in pools.values())
        <= job["metrics"]["cluster"]["CPU"]
    )


def test_slow_compute_bounds_in_flight_segments(tmp_path, ray_env, monkeypatch):
    root, marks = ray_env
    monkeypatch.setenv("SILA_TEST_SLEEP", "0.25")  # compute 10x slower than loading
    (marks / "depth.log").unlink(missing_ok=True)
    lake = sila.Lake(tmp_path / "l").init()
    make_numbers(lake, 8, 100)
    job = lake.run(f"{root / 'stages.py'}:Three", executor="ray", workers=3)
    assert expected(lake)
    depths = [int(x) for x in (marks / "depth.log").read_text().split()]
    assert len(depths) == 16
    # never more segments loaded-and-waiting than fragments in flight, however slow compute is
    assert max(depths) <= job["metrics"]["segments_in_flight"]


def test_killed_compute_actor_loses_nothing(tmp_path, ray_env, monkeypatch):
    root, marks = ray_env
    monkeypatch.setenv("SILA_TEST_SLEEP", "0.1")
    for p in marks.glob("pid-*"):
        p.unlink()
    lake = sila.Lake(tmp_path / "k").init()
    make_numbers(lake, 6, 100)
    killed: list[int] = []

    def killer():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            for p in marks.glob("pid-*"):
                pid = int(p.name[4:])
                if psutil.pid_exists(pid):
                    time.sleep(0.3)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    job = lake.run(f"{root / 'stages.py'}:Three", executor="ray")
    t.join()
    assert killed, "the compute actor was never seen"
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0
    assert expected(lake) and lake.table("nums").count_rows("z IS NULL") == 0
    assert job["metrics"]["pools"]["compute"]["actor_restarts"] >= 1


def test_a_row_that_kills_its_worker_becomes_a_crash_error_alone(tmp_path, ray_env):
    root, _ = ray_env
    lake = sila.Lake(tmp_path / "d").init()
    make_numbers(lake, 2, 100)
    job = lake.run(f"{root / 'stages.py'}:Dies", executor="ray")
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 1
    t = lake.table("nums").to_table(columns=["x", "w", "dies_error"]).to_pylist()
    bad = [r for r in t if r["dies_error"]]
    # its 19 segment neighbours were retried alone and computed
    assert [r["x"] for r in bad] == [13.0] and "worker crashed" in bad[0]["dies_error"]
    assert all(r["w"] == r["x"] + 0.5 for r in t if not r["dies_error"])


def test_steps_with_equal_cpu_resources_fuse_into_one_pool():
    class Light(sila.Stage):
        name = "light"
        table = "nums"
        inputs = ["x"]
        outputs = [pa.field("l", pa.float32())]

        def preprocess(self, batch):
            return batch

    plan = plan_pools(Light, {"CPU": 2.0})
    assert (
        list(plan) == ["all"] and plan["all"].workers == 2 and plan["all"].cpus == 1
    )  # one per core


def test_pool_plan_fits_the_cluster():
    plan = plan_pools(Heavy, {"CPU": 2.0, "GPU": 1.0})
    assert sum(r.cpus * r.workers for r in plan.values()) <= 2.0  # 3 CPUs asked, 2 exist: shared
    assert plan["compute"].gpus == 1 and plan["compute"].workers == 1 and "postprocess" not in plan
    plan = plan_pools(Heavy, {"CPU": 64.0, "GPU": 4.0})
    assert plan["compute"].workers == 4 and plan["preprocess"].cpus == 2
    plan = plan_pools(Heavy, {"CPU": 8.0})  # no GPU: compute runs on CPU, never unschedulable
    assert plan["compute"].gpus == 0 and plan["compute"].workers >= 1


class Heavy(sila.Stage):
    name = "heavy"
    table = "nums"
    inputs = ["x"]
    outputs = [pa.field("h", pa.float32())]
    compute_resources = sila.Resources(cpus=1, gpus=1)
    preprocess_resources = sila.Resources(cpus=2)

    def preprocess(self, batch):
        return batch


def cmdline(p: psutil.Process) -> str:
    try:  # Ray's short-lived processes may exit (or be zombies) while we look
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def test_killed_ray_driver_leaves_no_processes(tmp_path, ray_env):
    root, _ = ray_env
    lake = sila.Lake(tmp_path / "orphan").init()
    make_numbers(lake, 20, 100)
    env = {**os.environ, "SILA_TEST_SLEEP": "0.3"}
    p = subprocess.Popen(
        [
            str(BIN / "sila"),
            "run",
            f"{root / 'stages.py'}:Three",
            "--lake",
            lake.uri,
            "--executor",
            "ray",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    driver = psutil.Process(p.pid)
    deadline = time.time() + 90
    tree: list[psutil.Process] = []
    while time.time() < deadline:
        tree = driver.children(recursive=True)
        if any("StepActor" in cmdline(c) for c in tree):
            break
        time.sleep(0.2)
    tree = driver.children(recursive=True)
    assert len(tree) >= 4, "Ray never started"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    gone, alive = psutil.wait_procs(tree, timeout=20)
    assert not alive, f"left behind: {[cmdline(a) for a in alive]}"
