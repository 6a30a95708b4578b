"""The stage contract holds both ways: stages read nothing undeclared (no coordinator imports,
no table opened in setup), the platform reads only declared hooks (no getattr with a hook
name, no class mutation), and a stage's identity is a pure function of class + settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import sila
from sila.stage import Stage, StageContext
from tests.conftest import make_numbers

ROOT = Path(__file__).resolve().parents[1]
STAGES, COORDINATOR = ROOT / "stages", ROOT / "coordinator"
# Hooks the platform once read with getattr and a default; now declared on Stage.
LEGACY_HOOKS = {"resolve_where", "also_reads", "gate_columns"}
# Methods that run before any row: where reading a table is a hidden, racing read.
SETUP_METHODS = {"setup", "load_fit"}
TABLE_OPENERS = {"lake", "table", "dataset"}  # ctx.lake(), lake.table(), lance.dataset()


def _sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _declared_hooks() -> set[str]:
    return {n for n in vars(Stage) if not n.startswith("_")} | LEGACY_HOOKS


def test_no_stage_imports_the_coordinator():
    bad = []
    for path in _sources(STAGES):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "sila.coordinator" or n.startswith("sila.coordinator.") for n in names):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, f"stages import the coordinator: {bad}"


def _opens_a_table(call: ast.Call) -> bool:
    fn = call.func
    if not isinstance(fn, ast.Attribute) or fn.attr not in TABLE_OPENERS:
        return False
    owner = fn.value.id if isinstance(fn.value, ast.Name) else None
    if fn.attr == "table":
        return owner not in ("pa", "pyarrow")  # pa.table(...) builds a table, reads none
    if fn.attr == "dataset":
        return owner == "lance"
    return True


def test_no_stage_reads_a_table_in_setup():
    assert not hasattr(StageContext, "lake")
    assert "lake" not in StageContext.__dataclass_fields__
    bad = []
    for path in _sources(STAGES):
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(fn, ast.FunctionDef) or fn.name not in SETUP_METHODS:
                continue
            for call in ast.walk(fn):
                if isinstance(call, ast.Call) and _opens_a_table(call):
                    bad.append(f"{path.relative_to(ROOT)}:{call.lineno} in {fn.name}()")
    assert not bad, f"declare a lookup (or read ctx.facts / ctx.fit) instead: {bad}"


def test_the_platform_reads_hooks_without_getattr():
    hooks = _declared_hooks()
    assert {"gate", "lookups", "child_parent_key", "model_calls_per_row"} <= hooks
    bad = []
    for path in _sources(COORDINATOR):
        for call in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id in ("getattr", "hasattr")
                and len(call.args) >= 2
                and isinstance(call.args[1], ast.Constant)
                and call.args[1].value in hooks
            ):
                bad.append(f"{path.relative_to(ROOT)}:{call.lineno} {call.args[1].value!r}")
    assert not bad, f"read the declared hook as an attribute: {bad}"


def test_no_runtime_class_mutation():
    """Nothing assigns `__class__` or writes class state through `type(...)`."""
    bad = []
    for root in (COORDINATOR, ROOT / "sila", STAGES):
        for path in _sources(root):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                targets = node.targets if isinstance(node, ast.Assign) else []
                for t in targets:
                    if isinstance(t, ast.Attribute) and (
                        t.attr == "__class__"
                        or (
                            isinstance(t.value, ast.Call)
                            and isinstance(t.value.func, ast.Name)
                            and t.value.func.id == "type"
                        )
                    ):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


def test_quality_identity_is_a_function_of_its_rules():
    from sila.stages.quality import Quality

    default = Quality.resolved_version()
    first = Quality(min_sharpness=10.0)
    identity, version = first.work_identity(), first.resolved_version()
    second = Quality(min_sharpness=500.0)
    assert second.work_identity() != identity and second.resolved_version() != version
    # building the second changed nothing of the first, nor the class
    assert first.work_identity() == identity and first.resolved_version() == version
    assert Quality.resolved_version() == default == Quality().resolved_version()
    assert Quality(min_sharpness=10.0).work_identity() == identity


class Flag(Stage):
    """A decision: keep even numbers."""

    name = "flag"
    table = "nums"
    inputs = ["x"]
    outputs = [pa.field("flag_keep", pa.bool_())]
    version = "1"

    def compute(self, batch):
        return {"flag_keep": [int(x) % 2 == 0 for x in batch["x"].to_pylist()]}


class Gated(Stage):
    """Doubles the rows the `flag` decision kept; records a fact learned at setup."""

    name = "gated"
    table = "nums"
    inputs = ["x"]
    outputs = [pa.field("twice", pa.int64())]
    version = "1"
    settings = {"model_file": "tiny-v3"}

    def setup(self, ctx: StageContext) -> None:
        self.loaded = f"{self.config['model_file']} on {ctx.device}"
        self.seen_facts = ctx.facts

    def gate(self):
        return ["flag_keep"]

    def column_facts(self) -> dict[str, str]:
        return {"sila.loaded": self.loaded}

    def compute(self, batch):
        return {"twice": pc.multiply(batch["x"], 2)}


def _meta(lake, column: str) -> dict[str, str]:
    f = lake.table("nums").schema.field(column)
    return {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}


def test_gate_is_per_job_and_facts_are_stamped_by_the_platform(lake):
    make_numbers(lake, 2, 10)
    assert lake.run(Flag)["state"] == "succeeded"
    job = lake.run(Gated)
    assert job["state"] == "succeeded" and job["progress"]["rows"] == 10  # the even rows only
    assert Gated.where is None and type(Gated(model_file="x")) is Gated  # no class changed
    t = lake.table("nums").to_table(columns=["x", "twice"]).to_pylist()
    assert all((r["twice"] is None) == (int(r["x"]) % 2 == 1) for r in t)
    assert job["metrics"]["gating"]["where"] == "(flag_keep IS NOT FALSE)"
    assert _meta(lake, "twice")["sila.loaded"] == "tiny-v3 on cpu"
    # a --recompute re-creates the columns: they still say how they were made
    lake.run(Gated, recompute=True)
    assert _meta(lake, "twice")["sila.loaded"] == "tiny-v3 on cpu"
    assert lake.table("nums").to_table(columns=["twice"])["twice"].null_count == 10


def test_setup_sees_every_stages_column_facts(lake):
    make_numbers(lake, 1, 4)
    lake.run(Flag)
    stage = Gated()
    from sila.coordinator.stage_setup import set_up

    set_up(lake, stage, StageContext(lake.uri))
    assert stage.seen_facts["flag"]["sila.stage_version"] == "1"
    with pytest.raises(KeyError):
        stage.seen_facts["gated"]  # no columns yet: nothing to say


def test_pipeline_orders_a_gated_stage_after_its_decisions():
    from sila.coordinator.ops.pipeline import plan

    nodes = plan(["tests.test_contract:Gated", "tests.test_contract:Flag"])
    assert [n.name for n in nodes] == ["flag", "gated"]
    assert nodes[1].why == {"flag": "nums.flag_keep"}


def test_caption_declares_gate_endpoints_and_operational_settings():
    from sila.stages.caption.stage import Caption

    a = Caption(endpoint_urls=["http://a:1"], gate=["quality_keep"])
    b = Caption(endpoint_urls=["http://b:2"], gate=["quality_keep"], concurrency=3)
    assert a.endpoint_urls() == ["http://a:1"] and a.gate() == ["quality_keep"]
    assert a.work_identity() == b.work_identity()  # how it is reached is not what it computes
    assert a.config["endpoint_urls"] == ["http://a:1"]  # identity never swaps the settings
    assert Caption(gate="none").work_identity() != a.work_identity()
    assert sila.Stage().endpoint_urls() == [] and sila.Stage().gate() is None
