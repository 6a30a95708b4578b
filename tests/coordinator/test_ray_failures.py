"""Honest failures, as users hit them: a model that will not load fails the job on every
executor (and a re-run, once fixed, computes everything); a segment holding a bad row and a
row that crashes its worker; `setup()` only where its step needs it; step results passed
between Ray pools by reference, never through the driver."""

from __future__ import annotations

import os

import pytest
from sila.coordinator.leases import LeaseStore

import sila
from tests.conftest import make_numbers

pytestmark = pytest.mark.slow

STAGES = '''
import os, time
from pathlib import Path
import pyarrow as pa
from sila import Stage, Resources, RowError

HERE = Path(os.environ["SILA_TEST_DIR"])

class NeedsWeights(Stage):
    """Loads "weights" in setup(): missing until the test puts them there."""
    name = "weighted"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("wx", pa.float64())]
    def setup(self, ctx):
        w = HERE / "weights.txt"
        if not w.exists():
            raise FileNotFoundError(f"weights not found at {w}; set SILA_TEST_DIR or download them")
        self.w = float(w.read_text())
    def compute(self, batch):
        return {"wx": [x * self.w for x in batch["x"].to_pylist()]}

class BadAndCrashy(Stage):
    """x == 3 is bad data (RowError); x == 7 kills its worker while the crash file exists."""
    name = "crashy"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("cx", pa.float64())]
    segment_rows = 10
    def compute(self, batch):
        xs = batch["x"].to_pylist()
        if 7.0 in xs and (HERE / "crash").exists():
            os._exit(1)
        if 3.0 in xs:
            raise RowError("x = 3 is not allowed")
        return {"cx": [x + 100 for x in xs]}

class Steps(Stage):
    """Three pools; each step tags what it hands on, so the test can spot it in the driver."""
    name = "steps"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("sx", pa.float64())]
    segment_rows = 25
    preprocess_resources = Resources(cpus=0.5)
    postprocess_resources = Resources(cpus=0.5)
    def setup(self, ctx):
        (HERE / f"setup-{ctx.step}-{os.getpid()}").touch()
        self.loaded = True
    def preprocess(self, batch):
        return ("PREPARED-BY-PREPROCESS", batch["x"].to_numpy())
    def compute(self, prepared):
        assert self.loaded  # the model is here
        return ("COMPUTED-BY-COMPUTE", prepared[1] * 2)
    def postprocess(self, computed):
        return {"sx": computed[1] + 1}
'''


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    root = tmp_path_factory.mktemp("failures")
    (root / "stages.py").write_text(STAGES)
    os.environ["SILA_TEST_DIR"] = str(root)  # forwarded to Ray actors (SILA_* variables)
    return root


@pytest.mark.parametrize("executor", ["inline", "processes", "ray"])
def test_missing_weights_fail_the_job_and_mark_nothing(tmp_path, stages, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    (stages / "weights.txt").unlink(missing_ok=True)
    spec = f"{stages / 'stages.py'}:NeedsWeights"
    lake = sila.Lake(tmp_path / "lake").init()
    make_numbers(lake, 4, 20)
    workers = 2 if executor == "processes" else 1
    with pytest.raises(sila.SilaError) as err:
        lake.run(spec, executor=executor, workers=workers)
    msg = str(err.value)
    assert "failed to set up" in msg and f"weights not found at {stages / 'weights.txt'}" in msg
    assert "Traceback" not in msg
    jobs = sorted(lake.store.list("jobs"), key=lambda e: e.modified)
    assert "weights not found" in lake.store.get(jobs[-1].key).decode()  # the job says why
    assert lake.store.list("leases") == []
    if "weighted_error" in lake.table("nums").schema.names:
        assert lake.table("nums").count_rows("weighted_error IS NOT NULL OR wx IS NOT NULL") == 0
    # the user fixes it and runs again: everything is computed (no "nothing to do")
    (stages / "weights.txt").write_text("2")
    job = lake.run(spec, executor=executor, workers=workers)
    assert job["state"] == "succeeded" and job["progress"]["rows"] == 80
    assert lake.table("nums").count_rows("wx = x * 2") == 80


@pytest.mark.parametrize("executor", ["processes", "ray"])
def test_a_bad_row_and_a_crashing_row_in_one_segment(tmp_path, stages, executor, request):
    """The segment [0, 10) holds a RowError (x = 3) and a row that kills its worker (x = 7):
    the job goes on, x = 3 gets its message, x = 7 a crash error that `--retry-errors`
    retries once the cause is gone."""
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    (stages / "crash").touch()
    spec = f"{stages / 'stages.py'}:BadAndCrashy"
    lake = sila.Lake(tmp_path / "lake").init()
    make_numbers(lake, 2, 10)
    job = lake.run(spec, executor=executor, workers=2)
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 2
    rows = {r["x"]: r for r in lake.table("nums").to_table().to_pylist()}
    assert rows[3.0]["crashy_error"] == "x = 3 is not allowed"
    assert "worker crashed" in rows[7.0]["crashy_error"] and rows[7.0]["cx"] is None
    assert all(r["cx"] == x + 100 for x, r in rows.items() if x not in (3.0, 7.0))
    (stages / "crash").unlink()
    again = lake.run(spec, executor=executor, workers=2, retry_errors=True)
    assert again["state"] == "succeeded"
    rows = {r["x"]: r for r in lake.table("nums").to_table().to_pylist()}
    assert rows[7.0]["cx"] == 107.0 and rows[7.0]["crashy_error"] is None
    assert rows[3.0]["crashy_error"] == "x = 3 is not allowed"  # bad data stays bad
    assert lake.store.list("leases") == [] and LeaseStore(lake.store).live() == []


def test_setup_runs_only_where_needed_and_results_skip_the_driver(
    tmp_path, stages, ray_cluster, monkeypatch
):
    import ray

    for p in stages.glob("setup-*"):
        p.unlink()
    seen: list = []
    real_get = ray.get

    def spy(refs, *a, **kw):  # everything the driver fetches from the object store
        out = real_get(refs, *a, **kw)
        seen.extend(out if isinstance(out, list) else [out])
        return out

    monkeypatch.setattr(ray, "get", spy)
    lake = sila.Lake(tmp_path / "lake").init()
    make_numbers(lake, 2, 50)
    job = lake.run(f"{stages / 'stages.py'}:Steps", executor="ray")
    assert job["state"] == "succeeded"
    assert lake.table("nums").count_rows("sx = x * 2 + 1") == 100
    assert set(job["metrics"]["pools"]) == {"preprocess", "compute", "postprocess"}
    steps = {p.name.split("-")[1] for p in stages.glob("setup-*")}
    assert steps == {"compute"}  # preprocess and postprocess actors never loaded the model
    intermediate = [v for v in seen if isinstance(v, tuple) and v and isinstance(v[0], str)]
    assert not [v for v in intermediate if "-BY-" in v[0]], "a step result went via the driver"
    assert any(isinstance(v, dict) and "sx" in v for v in seen)  # only the final result did
