"""User stages: files, installed packages (entry points), the decorator, the Python API, and
every contract error with its message."""

from __future__ import annotations

import json
import os
import subprocess

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import sila
from sila.registry import registered
from tests.conftest import BIN, make_numbers

SCORE = """
import pyarrow as pa
import pyarrow.compute as pc
import sila

class Score(sila.Stage):
    name = "score"; table = "nums"; inputs = ["x"]
    outputs = [pa.field("score", pa.float64())]
    def compute(self, batch):
        return {"score": pc.add(pc.multiply(batch["x"], 2), 1)}

@sila.stage(table="nums", inputs=["x"], outputs={"sq": pa.float64(), "parity": pa.string()})
def square(batch):
    xs = batch["x"].to_pylist()
    return {"sq": [x * x for x in xs], "parity": ["even" if x % 2 == 0 else "odd" for x in xs]}
"""


def test_file_stage_cli_and_python_give_identical_tables(tmp_path, stage_file):
    path = stage_file(SCORE)
    a, b = sila.Lake(tmp_path / "a").init(), sila.Lake(tmp_path / "b").init()
    make_numbers(a, 4, 50)
    make_numbers(b, 4, 50)
    for target in ("Score", "square"):
        res = subprocess.run(
            [str(BIN / "sila"), "run", f"{path}:{target}", "--lake", a.uri, "--json"],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["progress"]["rows"] == 200
        assert b.run(f"{path}:{target}")["state"] == "succeeded"
    ta, tb = (x.table("nums").to_table().sort_by("x") for x in (a, b))
    assert ta.equals(tb)
    assert ta["score"].to_pylist()[:3] == [1.0, 3.0, 5.0]
    assert ta["parity"].to_pylist()[:2] == ["even", "odd"] and ta["sq"].to_pylist()[3] == 9.0


def test_installed_package_registers_through_the_entry_point_group(tmp_path, nums):
    site = tmp_path / "site"
    pkg = site / "acme_stages"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(SCORE)
    dist = site / "acme_stages-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-stages\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sila.stages]\nacme_score = acme_stages:Score\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = json.loads(
        subprocess.run(
            [str(BIN / "sila"), "stages", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    names = {s["name"]: s for s in out["stages"]}
    assert (
        names["acme_score"]["origin"] == "entry point (acme-stages)"
        and names["acme_score"]["table"] == "nums"
    )
    assert names["thumbnail"]["origin"] == "entry point (sila)"  # built-ins register the same way
    res = subprocess.run(
        [str(BIN / "sila"), "run", "acme_score", "--lake", nums.uri, "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert nums.table("nums").count_rows("score = x * 2 + 1") == 600


def test_module_path_and_missing_targets(tmp_path, nums, stage_file, monkeypatch):
    stage_file(SCORE, "mymod.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert nums.run("mymod:Score")["progress"]["rows"] == 600
    with pytest.raises(sila.SilaError, match="has no 'Nope'.*stages there: Score"):
        nums.run("mymod:Nope")
    with pytest.raises(sila.SilaError, match="does not exist"):
        nums.run(str(tmp_path / "missing.py") + ":Score")


def _stage(**kw):
    attrs = {
        "name": "bad",
        "table": "nums",
        "inputs": ["x"],
        "outputs": [pa.field("v", pa.float64())],
        "version": "1",
    }
    attrs.update(kw)
    return type("Bad", (sila.Stage,), attrs)


@pytest.mark.parametrize(
    "compute,match",
    [
        (
            lambda self, b: {"v": ["a"] * b.num_rows},
            r"output 'v' is declared double.*'a' with type str",
        ),
        (lambda self, b: {"v": [1.0]}, r"column 'v' has 1 values for \d+ input rows"),
        (lambda self, b: {"v": [1.0] * b.num_rows, "w": [1] * b.num_rows}, r"undeclared \['w'\]"),
        (lambda self, b: {}, r"missing \['v'\]"),
        (lambda self, b: 42, r"returned int"),
    ],
)
def test_contract_errors_stop_the_run_and_leave_no_trace(nums, compute, match):
    before = nums.table("nums").schema
    with pytest.raises(sila.ContractError, match=match) as e:
        nums.run(_stage(compute=compute))
    assert "stage 'bad'" in str(e.value)
    assert nums.table("nums").schema.equals(before)  # columns created for the run were removed


def test_declaration_errors(nums):
    with pytest.raises(sila.ContractError, match="input column 'nope' does not exist"):
        nums.run(_stage(inputs=["nope"], compute=lambda s, b: {"v": [0.0] * b.num_rows}))
    with pytest.raises(sila.ContractError, match="'x' already exists, owned by no stage"):
        nums.run(_stage(inputs=[], outputs=[pa.field("x", pa.float64())]))
    nums.run(_stage(name="first", compute=lambda s, b: {"v": pc.cast(b["x"], pa.float64())}))
    with pytest.raises(sila.ContractError, match="'v' already exists, owned by 'first'"):
        nums.run(_stage(name="second"))
    with pytest.raises(sila.ContractError, match="no setting"):
        nums.run(_stage(), settings={"threshold": 1})


def test_a_stage_broken_for_every_row_stops_before_writing(nums):
    def compute(self, batch):
        raise KeyError("model_output")

    with pytest.raises(sila.StageFailed, match="KeyError"):
        nums.run(_stage(compute=compute))
    assert "v" not in nums.table("nums").schema.names


def test_decorator_makes_an_ordinary_stage():
    @sila.stage(table="nums", inputs=["x"], outputs={"neg": pa.float64()}, where="x > 1")
    def neg(batch):
        """Negate x."""
        return pc.negate(batch["x"])

    assert issubclass(neg, sila.Stage) and neg.name == "neg" and neg.where == "x > 1"
    assert [f.name for f in neg.output_fields()] == ["neg", "neg_error"]
    assert neg.__doc__ == "Negate x." and neg.resolved_version().startswith("c")


def test_registered_lists_builtins():
    reg = registered()
    assert reg["thumbnail"].cls is not None and reg["thumbnail"].origin == "entry point (sila)"
