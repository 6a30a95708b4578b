"""Register a stage's columns on its table: ownership, metadata-only adds, resets on version change."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import lance
import pyarrow as pa
from sila.coordinator.lookups import check_lookups

from sila.errors import ContractError, LakeError, StaleColumnsError
from sila.lake import Lake
from sila.schema import (
    SPEC_KEY,
    STAGE_KEY,
    VERSION_KEY,
    check_ownership,
    owned,
    owner,
    type_matches,
    version_of,
)

log = logging.getLogger(__name__)


IDENTITY = b"sila.identity"  # the work identity the columns were created under (state.py)


def declared_fields(stage_cls, identity: str | None = None) -> list[pa.Field]:
    """The stage's output fields with their ownership metadata. `stage_cls`: the job's stage
    instance (its version follows its settings and rules) or, outside a job, its class."""
    cls = stage_cls if isinstance(stage_cls, type) else type(stage_cls)
    spec = cls.__dict__.get("__sila_spec__")
    fields = owned(
        stage_cls.output_fields(),
        stage_cls.name,
        stage_cls.resolved_version(),
        stage_cls.model,
        spec,
    )
    if identity:  # a data file without a state record was computed under this identity
        fields = [
            f.with_metadata({**(f.metadata or {}), IDENTITY: identity.encode()}) for f in fields
        ]
    return fields


def check_inputs(lake: Lake, stage_cls, ds: lance.LanceDataset) -> None:
    names = set(ds.schema.names)
    check_lookups(lake, stage_cls, names)  # declared join keys; a dotted input names `Lookup`
    for col in stage_cls.inputs:
        if col not in names:
            raise ContractError(
                f"stage '{stage_cls.name}': input column '{col}' does not exist in table "
                f"'{stage_cls.table}' (columns: {', '.join(sorted(names))}); run the stage that "
                "produces it first, or fix `inputs`"
            )


@dataclass
class ColumnPlan:
    ds: lance.LanceDataset
    created: bool  # this run added the columns (a failed run that committed nothing drops them)
    reset: bool  # new version / --recompute: reset them once the new code has a good segment


RESET_JOB = b"sila.reset_job"


def prepare_columns(
    lake: Lake, stage_cls, *, recompute: bool = False, identity: str | None = None
) -> ColumnPlan:
    """Make the table's schema ready for the stage, writing metadata only and losing nothing.

    - no columns yet: add them (metadata-only);
    - same outputs, same version: nothing to do;
    - outputs changed under an unchanged explicit version: refuse, naming `version` and
      `--recompute` (resetting would silently drop computed values);
    - a new version or `--recompute`: the reset is only planned; the worker performs it after the
      new code's first good segment (`reset_columns`), so a broken new version loses nothing.
    """
    ds = lake.table(stage_cls.table)
    check_inputs(lake, stage_cls, ds)
    fields = declared_fields(stage_cls, identity)
    check_ownership(ds.schema, stage_cls.name, fields)
    existing = [f for f in ds.schema if owner(f) == stage_cls.name]
    version = stage_cls.resolved_version()
    if not existing:
        return ColumnPlan(_add(lake, stage_cls, fields), created=True, reset=False)
    have = {f.name: f.type for f in existing}
    same_shape = have.keys() == {f.name for f in fields} and all(
        type_matches(f.type, have[f.name]) for f in fields
    )
    old_versions = {version_of(f) for f in existing}
    if same_shape and old_versions == {version} and not recompute:
        return ColumnPlan(ds, created=False, reset=False)
    if recompute:
        return ColumnPlan(ds, created=False, reset=True)
    if old_versions == {version}:  # explicit version kept, outputs changed
        added = sorted({f.name for f in fields} - have.keys())
        removed = sorted(have.keys() - {f.name for f in fields})
        retyped = sorted(n for n in have.keys() & {f.name for f in fields} if n not in added)
        what = "; ".join(
            x
            for x in (
                f"added {added}" if added else "",
                f"removed {removed}" if removed else "",
                f"changed type of {retyped}" if retyped and not same_shape else "",
            )
            if x
        )
        raise ContractError(
            f"stage '{stage_cls.name}': its outputs changed ({what or 'shape'}) but its "
            f'`version = "{version}"` did not, and the existing columns hold computed values. '
            f'Bump `version` (e.g. `version = "{_next(version)}"`) so every fragment is '
            f"recomputed with the new outputs, or run `sila run {stage_cls.name} --recompute`; "
            "the old values stay readable until the new code has produced its first good segment."
        )
    if not stage_cls.version_is_explicit():
        from sila.coordinator.discovery import holding_values

        done = holding_values(ds, stage_cls.name)  # partial and stale ones hold old outputs too
        raise StaleColumnsError(
            f"stage '{stage_cls.name}' changed since its columns were computed (version "
            f"{', '.join(sorted(v or '?' for v in old_versions))} -> {version}; {len(done)} "
            f"fragment(s) hold the old outputs). Run `sila run {stage_cls.name} --recompute` "
            f'to recompute them, or pin `version = "..."` on the class to keep them.'
        )
    return ColumnPlan(ds, created=False, reset=True)


def _next(version: str) -> str:
    return str(int(version) + 1) if version.isdigit() else version + "-2"


def _add(lake: Lake, stage_cls, fields: list[pa.Field]) -> lance.LanceDataset:
    ds = lake.table(stage_cls.table)
    try:
        ds.add_columns(fields)
    except (OSError, ValueError) as e:  # a concurrent job added them first
        ds = lake.table(stage_cls.table)
        if not all(ds.schema.get_field_index(f.name) >= 0 for f in fields):
            raise LakeError(f"could not add columns of stage '{stage_cls.name}': {e}") from e
        return ds
    return lake.table(stage_cls.table)


def reset_columns(
    lake: Lake, stage_cls, job: str, identity: str | None = None
) -> lance.LanceDataset:
    """Drop and re-add the stage's columns once per job (metadata only); idempotent across the
    job's workers: the new fields carry the job id, so a second worker sees the reset done."""
    marker = job.encode()
    declared = declared_fields(stage_cls, identity)
    for attempt in range(10):
        ds = lake.table(stage_cls.table)
        existing = [f for f in ds.schema if owner(f) == stage_cls.name]
        if existing and all((f.metadata or {}).get(RESET_JOB) == marker for f in existing):
            return ds
        fields = _with_stamped_facts(declared, existing, marker)
        try:
            if existing:
                log.info(
                    "stage %s: first good segment of the new code; resetting its columns",
                    stage_cls.name,
                )
                ds.drop_columns([f.name for f in existing])
                ds = lake.table(stage_cls.table)
            ds.add_columns(fields)
        except (OSError, ValueError, RuntimeError) as e:  # another worker of this job raced us
            log.info("column reset attempt %d: %s", attempt + 1, e)
            time.sleep(0.05 * (attempt + 1))
            continue
        from sila.coordinator.state import StageRecords

        StageRecords(lake.store, stage_cls.table, stage_cls.name).clear()
        return lake.table(stage_cls.table)
    raise LakeError(f"could not reset the columns of stage '{stage_cls.name}'")


def _with_stamped_facts(
    declared: list[pa.Field], existing: list[pa.Field], marker: bytes
) -> list[pa.Field]:
    """`declared` fields marked with the reset's job, carrying over the facts the platform
    stamped on the columns after `setup()` (`Stage.column_facts`): the re-created columns say
    how their values are made, as the dropped ones did. Ownership, version, spec and identity
    are the declared ones: they describe this run's columns, not the dropped ones."""
    platform = {STAGE_KEY, VERSION_KEY, SPEC_KEY, IDENTITY, RESET_JOB}
    meta = (existing[0].metadata or {}) if existing else {}
    stamped = {k: v for k, v in meta.items() if k not in platform}
    return [f.with_metadata({**(f.metadata or {}), **stamped, RESET_JOB: marker}) for f in declared]
