"""A pipeline's plan: the order its stages' declared reads give, and when each may start.

A stage depends on the stages that write the columns it declares it reads (`input_columns()`,
`where`, `fit_reads`, `lookups`, `gate()`: a gated stage runs after every decision it is gated
on) and on the explode stage that creates its table. Whether it may run while an upstream still
runs (`overlap`) follows from what the coordinator can hold back: fragments whose upstream
columns on the same table are not done are deferred (discovery), so an enrich stage reading
those through `inputs`, `where` or its gate takes each committed fragment as it lands; a global
stage, or one reading an upstream's columns through a lookup or a setting, waits for the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from sila.coordinator import discovery

from sila.errors import SilaError
from sila.recipe import stage_settings
from sila.registry import resolve
from sila.stage import Stage

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
    ties: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # upstream -> reads


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
                n.ties.setdefault(w, set()).add(tc)
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
    """The stages a recipe names: `[pipeline] stages`, else its `[stages.X]` sections."""
    stages = recipe.get("pipeline", {}).get("stages")
    if not stages:
        stages = list(recipe.get("stages", {}))
    if not stages:
        raise SilaError("the recipe names no stages: add [pipeline] stages = [...] or [stages.X]")
    return list(stages)


def select(nodes: list[Node], only: list[str] | None, until: str | None) -> list[Node]:
    """`only` these stages, or `until` one and what it needs; unknown names are refused."""
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


WAIT_GLOBAL = "waits for upstream end (global)"


def overlap(node: Node, up: Node) -> str | None:
    """None when `node` may run while `up` still runs and stay exact (the coordinator defers
    the fragments `up` has not done); else why it waits for `up` to end."""
    if node.cls.is_global:
        return WAIT_GLOBAL  # its fit reads the whole table
    ties = node.ties.get(up.name, set())
    if up.cls.kind == "explode" and up.cls.child_table == node.cls.table:
        parent = {(up.cls.table, f.name) for f in up.cls.output_fields()}
        if not ties & parent:
            return None  # whole child fragments appear; none reads the parent's outputs
    if not discovery.DEFERS_UNFINISHED_UPSTREAM:
        return "waits for upstream end"
    held = deferrable_columns(node)
    other = sorted(f"{t}.{c}" for t, c in ties if t != node.cls.table or c not in held)
    if other:
        return f"waits for upstream end (reads {', '.join(other)}, which is not deferred)"
    return None


def deferrable_columns(node: Node) -> set[str]:
    """Columns of its own table whose unfinished fragments discovery holds back for `node`:
    its class `inputs`, its `where` and its gate (bound on the table as a run binds it)."""
    stage = node.stage
    names = set(type(stage).inputs)
    names |= set(_IDENT.findall(type(stage).where or ""))
    gate = stage.gate()
    if gate == "auto":  # the decisions of its table that the plan tied it to
        own = type(stage).table
        names |= {c for ts in node.ties.values() for t, c in ts if t == own and c.endswith("_keep")}
    elif isinstance(gate, list | tuple):
        names |= set(gate)
    return names


def missing_reads(lake, node: Node) -> str | None:
    """Why `node` has nothing to do on this lake yet: its table, an input column or a lookup's
    table or column does not exist (None: everything it must read exists). Gate columns are not
    required: a decision never written gates nothing."""
    cls, stage = node.cls, node.stage
    if not lake.has_table(cls.table):
        return f"table '{cls.table}' does not exist"
    names = set(lake.table(cls.table).schema.names)
    need = [c for c in stage.input_columns() if "." not in c and c not in names]
    if need:
        return f"input column(s) {', '.join(need)} do not exist on '{cls.table}'"
    for lk in stage.lookups:
        if lk.key not in names:
            return f"lookup key '{lk.key}' does not exist on '{cls.table}'"
        if not lake.has_table(lk.table):
            return f"lookup table '{lk.table}' does not exist"
        theirs = set(lake.table(lk.table).schema.names)
        gone = [c for c in (*lk.columns, lk.on) if c not in theirs]
        if gone:
            return f"lookup column(s) {', '.join(gone)} do not exist on '{lk.table}'"
    return None


def tie_columns_missing(lake, node: Node, running: set[str]) -> list[str]:
    """Columns `node` reads that a still-running upstream writes and has not yet added to the
    table: until they exist, a job would bind its gate or its deferral without them."""
    out = []
    schemas: dict[str, set[str]] = {}
    for up in sorted(running):
        for table, col in sorted(node.ties.get(up, set())):
            if table not in schemas:
                schemas[table] = (
                    set(lake.table(table).schema.names) if lake.has_table(table) else set()
                )
            if col not in schemas[table]:
                out.append(f"{table}.{col}")
    return out
