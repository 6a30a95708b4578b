"""Gating: a stage's row filter resolved once per job from the decision columns that exist.

Filters write `<filter>_keep` (bool; null = undecided). An expensive stage (a captioner) skips
rows some filter rejected; a filter that never ran has no column and gates nothing, an
undecided row (null) is kept. A stage opts in by declaring `Stage.gate()`.

The job's effective row filter (the class's declared `where` and the gate resolved on the
job's schema) is carried by the job's stage *instance* (`bind_gate`): row selection,
dependencies and the where hash read `stage.where` from that instance. The class is never
changed, so two jobs of one stage class in a process never see each other's gate.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from sila.errors import SilaError
from sila.schema import owner
from sila.stage import Stage


def decision_columns(schema: pa.Schema) -> list[str]:
    """`<name>_keep` bool columns written by a stage (a filter's or dedup's decision; a base
    column of that name, written by no stage, is not a decision)."""
    return [
        f.name
        for f in schema
        if f.name.endswith("_keep") and pa.types.is_boolean(f.type) and owner(f) is not None
    ]


def decision_where(schema: pa.Schema, gate: Any) -> str | None:
    """`gate`: "auto" (every decision column present), a list of column names (those present
    count), or [] / "none" (no gating). None when nothing gates."""
    if gate in (None, "", "none", [], ()):
        return None
    if gate == "auto":
        cols = decision_columns(schema)
    elif isinstance(gate, list | tuple):
        cols = [c for c in gate if c in schema.names]
    else:
        raise SilaError(f"gate must be 'auto', 'none' or a list of columns, got {gate!r}")
    return " AND ".join(f"({c} IS NOT FALSE)" for c in cols) or None


def gate_where(stage: Stage, schema: pa.Schema) -> str | None:
    """The predicate the stage's declared `gate()` resolves to on `schema` (None: no gate)."""
    return decision_where(schema, stage.gate())


def stage_where(stage: Stage, schema: pa.Schema) -> str | None:
    """The stage class's declared `where` combined with its gate resolved on `schema`."""
    from sila.coordinator.inputs import combine_where

    own, gate = type(stage).where, gate_where(stage, schema)
    return combine_where(own, gate) if own and gate else own or gate


def bind_gate(stage: Stage, schema: pa.Schema) -> Stage:
    """Give the job's stage instance its effective row filter for `schema` (instance state,
    idempotent: always derived from the class's declared `where`); returns `stage`."""
    stage.where = stage_where(stage, schema)  # type: ignore[misc]  # per instance, by design
    return stage
