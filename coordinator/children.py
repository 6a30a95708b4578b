"""Idempotent appends of an explode stage's child rows (e.g. clips of a source), by `id`."""

from __future__ import annotations

import pyarrow as pa

from sila.errors import ContractError
from sila.lake import Lake
from sila.schema import owned


def child_schema(stage_cls) -> pa.Schema:
    return pa.schema(
        owned(stage_cls.child_fields, stage_cls.name, stage_cls.resolved_version(), stage_cls.model)
    )


def append_children(lake: Lake, stage_cls, children: pa.Table) -> int:
    """merge_insert on `id`: rows already present (a re-run after a crash) are not added twice."""
    schema = child_schema(stage_cls)
    try:
        children = children.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
        raise ContractError(
            f"stage '{stage_cls.name}': child rows do not match child_fields {schema.names}: {e}"
        ) from e
    if children.column("id").null_count:
        raise ContractError(f"stage '{stage_cls.name}': every child row needs an id")
    for _ in range(5):
        if not lake.has_table(stage_cls.child_table):
            try:
                lake.create_table(stage_cls.child_table, children)
                return children.num_rows
            except (OSError, ValueError):
                continue  # someone created it first: merge instead
        ds = lake.table(stage_cls.child_table)
        res = ds.merge_insert("id").when_not_matched_insert_all().execute(children)
        return (
            int(res.get("num_inserted_rows", children.num_rows))
            if isinstance(res, dict)
            else children.num_rows
        )
    raise ContractError(f"could not create table '{stage_cls.child_table}'")
