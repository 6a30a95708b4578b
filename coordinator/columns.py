"""Register a stage's columns on its table: ownership, metadata-only adds, resets on version change."""

from __future__ import annotations

import logging

import lance
import pyarrow as pa

from sila.errors import ContractError, LakeError, StaleColumnsError
from sila.lake import Lake
from sila.schema import check_ownership, owned, owner, type_matches, version_of

log = logging.getLogger(__name__)


def declared_fields(stage_cls) -> list[pa.Field]:
    spec = stage_cls.__dict__.get("__sila_spec__")
    return owned(
        stage_cls.output_fields(),
        stage_cls.name,
        stage_cls.resolved_version(),
        stage_cls.model,
        spec,
    )


def check_inputs(lake: Lake, stage_cls, ds: lance.LanceDataset) -> None:
    names = set(ds.schema.names)
    for col in stage_cls.inputs:
        if "." in col:
            other, ocol = col.split(".", 1)
            key = f"{other.removesuffix('s')}_id"
            if key not in names:
                raise ContractError(
                    f"stage '{stage_cls.name}': input '{col}' joins on column '{key}', "
                    f"which table '{stage_cls.table}' does not have"
                )
            if ocol not in lake.table(other).schema.names:
                raise ContractError(
                    f"stage '{stage_cls.name}': input '{col}': table '{other}' has no column '{ocol}'"
                )
        elif col not in names:
            raise ContractError(
                f"stage '{stage_cls.name}': input column '{col}' does not exist in table "
                f"'{stage_cls.table}' (columns: {', '.join(sorted(names))}); run the stage that "
                "produces it first, or fix `inputs`"
            )


def prepare_columns(
    lake: Lake, stage_cls, *, recompute: bool = False
) -> tuple[lance.LanceDataset, bool]:
    """Make the table's schema hold the stage's columns at the stage's version.

    Returns (dataset, reset) where reset says the columns were (re)created, so every
    fragment is pending again. Only metadata is written.
    """
    ds = lake.table(stage_cls.table)
    check_inputs(lake, stage_cls, ds)
    fields = declared_fields(stage_cls)
    check_ownership(ds.schema, stage_cls.name, fields)
    existing = [f for f in ds.schema if owner(f) == stage_cls.name]
    version = stage_cls.resolved_version()
    if existing:
        have = {f.name: f.type for f in existing}
        same_shape = have.keys() == {f.name for f in fields} and all(
            type_matches(f.type, have[f.name]) for f in fields
        )
        old_versions = {version_of(f) for f in existing}
        if same_shape and old_versions == {version} and not recompute:
            return ds, False
        if not recompute and not stage_cls.version_is_explicit() and old_versions != {version}:
            from sila.coordinator.discovery import split_fragments

            done, _ = split_fragments(ds, stage_cls.name)
            raise StaleColumnsError(
                f"stage '{stage_cls.name}' changed since its columns were computed (version "
                f"{', '.join(sorted(v or '?' for v in old_versions))} -> {version}; {len(done)} "
                f"fragment(s) hold the old outputs). Run `sila run {stage_cls.name} --recompute` "
                f'to recompute them, or pin `version = "..."` on the class to keep them.'
            )
        reason = (
            "--recompute" if recompute else f"version {sorted(map(str, old_versions))} -> {version}"
        )
        log.warning("stage %s: resetting its columns (%s)", stage_cls.name, reason)
        ds.drop_columns([f.name for f in existing])
        ds = lake.table(stage_cls.table)
    try:
        ds.add_columns(fields)
    except (OSError, ValueError) as e:  # a concurrent job added them first
        ds = lake.table(stage_cls.table)
        if not all(ds.schema.get_field_index(f.name) >= 0 for f in fields):
            raise LakeError(f"could not add columns of stage '{stage_cls.name}': {e}") from e
        return ds, False
    return lake.table(stage_cls.table), True
