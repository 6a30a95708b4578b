"""`sila pipeline run RECIPE`: every stage of a recipe, in the order its data dependencies give.

The order is derived, never hand-written: a stage depends on the stages that write the columns
it declares it reads (`input_columns()`, `where`, `fit_reads`, `lookups`, `gate()`), and on the
explode stage that creates its table. Stages whose
dependencies allow it run at the same time as separate lease-coordinated jobs: a downstream job
takes the fragments its upstream has already committed (the coordinator defers the rest) and
runs again until every upstream job has ended, so one pass of the pipeline leaves nothing to do.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sila.errors import SilaError
from sila.recipe import load_recipe, stage_settings
from sila.registry import resolve
from sila.stage import Stage

log = logging.getLogger(__name__)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")


@dataclass
class Node:
    """One stage of a pipeline and the stages it must wait for."""

    name: str
    spec: str
    cls: type
    after: set[str] = field(default_factory=set)
    why: dict[str, str] = field(default_factory=dict)  # upstream -> the column that ties them
    stage: Stage | None = None  # built with the recipe's settings: its declared reads


def read_columns(
    stage: Stage, decisions: set[tuple[str, str]] = frozenset()
) -> set[tuple[str, str]]:
    """(table, column) pairs a stage reads, all of them declared: `input_columns()`, the
    identifiers of its `where`, a global stage's `fit_reads`, its lookups (their columns and
    join keys) and its `gate()` ("auto": every decision column in `decisions`)."""
    cls = type(stage)
    out: set[tuple[str, str]] = set()
    for name in stage.input_columns():
        table, dot, col = name.partition(".")
        out.add((table, col) if dot else (cls.table, name))
    for w in [cls.where, *stage.fit_reads]:
        for tok in _IDENT.findall(w or ""):
            table, dot, col = tok.partition(".")
            out.add((table, col) if dot else (cls.table, tok))
    for lk in stage.lookups:
        out |= {(lk.table, c) for c in (*lk.columns, lk.on)} | {(cls.table, lk.key)}
    gate = stage.gate()
    if gate == "auto":
        out |= {tc for tc in decisions if tc[0] == cls.table}
    elif isinstance(gate, list | tuple):
        out |= {(cls.table, c) for c in gate}
    return out


def written_columns(cls) -> set[tuple[str, str]]:
    """(table, column) pairs a stage writes: its outputs and an explode stage's child rows."""
    out = {(cls.table, f.name) for f in cls.output_fields()}
    if cls.kind == "explode" and cls.child_table:
        out |= {(cls.child_table, f.name) for f in cls.child_fields}
    return out


def decision_outputs(cls) -> set[tuple[str, str]]:
    """The `<name>_keep` decisions a stage writes (what an "auto" gate waits for)."""
    return {
        (cls.table, f.name)
        for f in cls.outputs
        if f.name.endswith("_keep") and pa.types.is_boolean(f.type)
    }


def plan(specs: list[str], recipe: dict[str, Any] | None = None) -> list[Node]:
    """Nodes in a dependency order (ties keep the recipe's order); cycles are refused. Each
    stage is built with the recipe's settings, since what it reads may follow them."""
    nodes = {}
    for spec in specs:
        cls = resolve(spec)
        if cls.name in nodes:
            raise SilaError(f"stage '{cls.name}' appears twice in the pipeline")
        stage = cls(**stage_settings(recipe or {}, cls.name, None))
        nodes[cls.name] = Node(cls.name, spec, cls, stage=stage)
    writers: dict[tuple[str, str], str] = {}
    creators: dict[str, set[str]] = {}  # table -> explode stages that create its rows
    decisions: set[tuple[str, str]] = set()
    for n in nodes.values():
        for tc in written_columns(n.cls):
            writers.setdefault(tc, n.name)
        decisions |= decision_outputs(n.cls)
        if n.cls.kind == "explode" and n.cls.child_table:
            creators.setdefault(n.cls.child_table, set()).add(n.name)
    for n in nodes.values():
        for tc in read_columns(n.stage, decisions - decision_outputs(n.cls)):
            w = writers.get(tc)
            if w and w != n.name:
                n.after.add(w)
                n.why.setdefault(w, f"{tc[0]}.{tc[1]}")
        for c in sorted(creators.get(n.cls.table, set()) - {n.name}):
            n.after.add(c)
            n.why.setdefault(c, f"creates table '{n.cls.table}'")
    order: list[Node] = []
    placed: set[str] = set()
    while len(order) < len(nodes):
        ready = [n for n in nodes.values() if n.name not in placed and n.after <= placed]
        if not ready:
            left = sorted(set(nodes) - placed)
            raise SilaError(f"the pipeline's stages depend on each other in a cycle: {left}")
        order.append(ready[0])
        placed.add(ready[0].name)
    return order


def recipe_stages(recipe: dict[str, Any]) -> list[str]:
    stages = recipe.get("pipeline", {}).get("stages")
    if not stages:
        stages = list(recipe.get("stages", {}))
    if not stages:
        raise SilaError("the recipe names no stages: add [pipeline] stages = [...] or [stages.X]")
    return list(stages)


def select(nodes: list[Node], only: list[str] | None, until: str | None) -> list[Node]:
    names = [n.name for n in nodes]
    for s in [*(only or []), *([until] if until else [])]:
        if s not in names:
            raise SilaError(f"stage '{s}' is not in this pipeline (stages: {', '.join(names)})")
    if until:
        keep = {until}
        by = {n.name: n for n in nodes}
        frontier = [until]
        while frontier:
            for up in by[frontier.pop()].after:
                if up not in keep:
                    keep.add(up)
                    frontier.append(up)
        nodes = [n for n in nodes if n.name in keep]
    if only:
        nodes = [n for n in nodes if n.name in set(only)]
    return nodes


@dataclass
class StageOutcome:
    stage: str
    state: str = "waiting"  # waiting | running | succeeded | failed | skipped
    jobs: list[str] = field(default_factory=list)
    fragments: int = 0
    rows: int = 0
    row_errors: int = 0
    children: int = 0  # rows an explode stage added to its child table
    seconds: float = 0.0
    message: str = ""

    def add(self, job: dict) -> None:
        p = job.get("progress", {})
        self.jobs.append(job.get("job", ""))
        self.fragments += p.get("fragments_done", 0)
        self.rows += p.get("rows", 0)
        self.row_errors += p.get("row_errors", 0)
        self.children += p.get("children", 0)


def run_pipeline(
    lake,
    recipe: str,
    *,
    only: list[str] | None = None,
    until: str | None = None,
    concurrent: bool = True,
    poll_s: float = 0.5,
    on_event=None,
    random_weights: bool | list[str] = False,
    **run_options: Any,
) -> dict:
    """Run a recipe's stages; returns {"stages": [...outcomes], "ok": bool, "seconds": s}.

    Each stage is one or more ordinary `sila run` jobs (same options, same job records). A
    stage that needs a model endpoint it cannot have here (no URL, no server installed) is
    skipped with the reason, and so are the stages that need its outputs. `random_weights`:
    True, or the names of the stages allowed to run with random weights (recorded in their
    columns' metadata)."""
    doc = load_recipe(recipe)
    pipeline_id = f"{time.strftime('%Y%m%dT%H%M%S')}-pipeline-{uuid.uuid4().hex[:6]}"
    run_options.setdefault("progress", False)
    nodes = select(plan(recipe_stages(doc), doc), only, until)
    outcomes = {n.name: StageOutcome(n.name) for n in nodes}
    ended = {n.name: threading.Event() for n in nodes}
    in_run = {n.name for n in nodes}
    t0 = time.monotonic()
    say = on_event or (lambda *_: None)

    def one(node: Node) -> None:
        out = outcomes[node.name]
        ups = [u for u in node.after if u in in_run]
        try:
            # A stage that reads an upstream's columns in the same table waits for it to end
            # unless the coordinator can defer fragments; an explode upstream only appends
            # whole child fragments, so its downstream may start at once.
            for u in ups:
                if not concurrent or not _may_overlap(node, outcomes_cls[u]):
                    ended[u].wait()
            for u in ups:
                if outcomes[u].state in ("failed", "skipped"):
                    out.state, out.message = "skipped", f"upstream '{u}' {outcomes[u].state}"
                    say("skip", node.name, out)
                    return
            reason = _endpoint_missing(node.spec, recipe, run_options.get("endpoint_url"))
            if reason:
                out.state, out.message = "skipped", reason
                say("skip", node.name, out)
                return
            opts = dict(run_options)
            if random_weights is True or (
                isinstance(random_weights, list | tuple | set) and node.name in random_weights
            ):
                opts["allow_random_weights"] = True
            out.state = "running"
            say("start", node.name)
            t = time.monotonic()
            while True:
                upstream_running = any(not ended[u].is_set() for u in ups)
                if lake.has_table(node.cls.table) or not ups:
                    out.add(_run_retrying(lake, node.spec, recipe, opts))
                elif not upstream_running:
                    out.message = f"nothing to do: table '{node.cls.table}' was not created"
                    break
                if not upstream_running:
                    break
                if any(outcomes[u].state == "failed" for u in ups):
                    break
                _wait_any([ended[u] for u in ups], poll_s)
            out.seconds = round(time.monotonic() - t, 2)
            out.state = "succeeded"
            say("end", node.name, out)
        except Exception as e:  # noqa: BLE001 - reported per stage; the others go on
            out.state, out.message = "failed", f"{type(e).__name__}: {e}"
            say("fail", node.name, out)
        finally:
            ended[node.name].set()

    outcomes_cls = {n.name: n.cls for n in nodes}
    if concurrent:
        threads = [threading.Thread(target=one, args=(n,), name=f"sila-{n.name}") for n in nodes]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    else:
        for n in nodes:
            one(n)
    ok = not any(o.state == "failed" for o in outcomes.values())
    record = {
        "pipeline": pipeline_id,
        "ok": ok,
        "state": "succeeded" if ok else "failed",
        "recipe": recipe,
        "order": [{"stage": n.name, "after": n.why} for n in nodes],
        "stages": [vars(outcomes[n.name]) for n in nodes],
        "seconds": round(time.monotonic() - t0, 2),
        "record": f"pipelines/{pipeline_id}.json",
    }
    lake.store.put(record["record"], json.dumps(record, indent=1, default=str).encode())
    return record


def _run_retrying(lake, spec: str, recipe: str, options: dict, attempts: int = 8) -> dict:
    """One `sila run`; two jobs adding columns to one table at the same moment conflict in
    Lance (a retryable commit conflict): the loser simply runs again."""
    for i in range(attempts):
        try:
            return lake.run(spec, recipe=recipe, **options)
        except Exception as e:
            if "etryable commit conflict" not in str(e) or i == attempts - 1:
                raise
            time.sleep(0.2 * (i + 1))
    raise AssertionError("unreachable")


def _endpoint_missing(spec: str, recipe: str, url: str | None) -> str | None:
    try:
        from sila.coordinator.ops.dry_run import endpoint_skip_reason
    except ImportError:  # pragma: no cover
        return None
    return endpoint_skip_reason(spec, recipe, url)


def _may_overlap(node: Node, upstream_cls) -> bool:
    """True when `node` may run while `upstream` still runs and stay exact."""
    if node.cls.is_global:
        return False  # its fit reads the whole table: the upstream must have finished
    if upstream_cls.kind == "explode" and upstream_cls.child_table == node.cls.table:
        parent_outputs = {(upstream_cls.table, f.name) for f in upstream_cls.output_fields()}
        return not (read_columns(node.stage) & parent_outputs)
    return _coordinator_defers()


def _coordinator_defers() -> bool:
    """Whether discovery holds back fragments whose upstream stages are unfinished."""
    try:
        from sila.coordinator import discovery

        return bool(getattr(discovery, "DEFERS_UNFINISHED_UPSTREAM", False))
    except ImportError:  # pragma: no cover
        return False


def _wait_any(events: list[threading.Event], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.is_set() for e in events):
            return
        time.sleep(0.05)
