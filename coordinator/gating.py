"""Gating: a stage's row filter resolved at run start from the decision columns that exist.

Filters write `<filter>_keep` (bool; null = undecided). An expensive stage (a captioner) skips
rows some filter rejected; a filter that never ran has no column and gates nothing, an
undecided row (null) is kept. A stage opts in by defining `resolve_where(schema)`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from sila.schema import owner


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
        from sila.errors import SilaError

        raise SilaError(f"gate must be 'auto', 'none' or a list of columns, got {gate!r}")
    return " AND ".join(f"({c} IS NOT FALSE)" for c in cols) or None


def stage_where(stage, schema: pa.Schema) -> str | None:
    """The stage's own `where` combined with what its `resolve_where(schema)` adds."""
    from sila.coordinator.inputs import combine_where

    hook = getattr(stage, "resolve_where", None)
    own, gate = type(stage).where, hook(schema) if callable(hook) else None
    return combine_where(own, gate) if own and gate else own or gate


def apply_gate(stage, schema: pa.Schema):
    """`stage`, its class's `where` replaced by the one resolved for `schema` (when the stage
    has `resolve_where`): every part of the platform that reads `type(stage).where` (row
    selection, dependencies, the where hash of fragment records) then sees the gate."""
    if not callable(getattr(stage, "resolve_where", None)):
        return stage
    cls = type(stage)
    where = stage_where(stage, schema)
    if where == cls.where:
        return stage
    base = getattr(cls, "__sila_gated_from__", cls)
    gated = type(
        base.__name__,
        (base,),
        {
            "where": where,
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
            "__sila_gated_from__": base,
            # the code version stays the base class's (a dynamic class has no source)
            "version": base.resolved_version(),
        },
    )
    stage.__class__ = gated
    return stage
