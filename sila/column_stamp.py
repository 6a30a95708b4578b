"""Facts a stage learns only at setup (the model really loaded, random weights, a fit id),
written into its columns' field metadata so the table says how each column was made.

`SetupFacts.record_facts` stamps the existing columns (a metadata-only commit, retried on a
concurrent commit) and keeps the facts on the class, so columns the coordinator re-creates
later in this process (a `--recompute` reset) carry them too. Which fragments hold values of
other facts is the coordinator's per-fragment work identity (the stage's `model_identity`).
"""

from __future__ import annotations

import logging
import time
from typing import ClassVar

import pyarrow as pa

from sila.errors import StaleColumnsError
from sila.schema import owner

log = logging.getLogger(__name__)


def column_facts(ds, stage: str) -> dict[str, str]:
    """The `sila.*` facts of a stage's first owned column (all of them carry the same)."""
    for f in ds.schema:
        if owner(f) == stage:
            return {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
    return {}


class SetupFacts:
    """Mixin for a Stage whose column metadata depends on what `setup` found."""

    _setup_facts: ClassVar[dict[str, str]] = {}

    @classmethod
    def output_fields(cls) -> list[pa.Field]:
        fields = super().output_fields()  # type: ignore[misc]
        extra = {k.encode(): v.encode() for k, v in cls._setup_facts.items()}
        return (
            [f.with_metadata({**(f.metadata or {}), **extra}) for f in fields] if extra else fields
        )

    def record_facts(self, lake, facts: dict[str, str]) -> None:
        type(self)._setup_facts = dict(facts)
        stamp_columns(lake, self.table, self.name, facts)  # type: ignore[attr-defined]


def stamp_columns(
    lake, table: str, stage: str, facts: dict[str, str], guarded: list[str] | None = None
) -> None:
    """Record `facts` on every column `stage` owns in `table`.

    `guarded` keys must not change while fragments hold outputs: a change raises
    StaleColumnsError naming `sila run STAGE --recompute`.
    """
    from sila.coordinator.discovery import split_fragments

    if not lake.has_table(table):
        return
    for attempt in range(20):
        ds = lake.table(table)
        names = [f.name for f in ds.schema if owner(f) == stage]
        if not names:
            return  # the columns are not there (a stage run outside `sila run`)
        have = column_facts(ds, stage)
        if all(have.get(k) == v for k, v in facts.items()):
            return
        changed = [k for k in guarded or [] if k in have and have[k] != facts.get(k)]
        if changed:
            done, _ = split_fragments(ds, stage)
            if done:
                was = ", ".join(f"{k}={have[k]}" for k in changed)
                now = ", ".join(f"{k}={facts.get(k)}" for k in changed)
                raise StaleColumnsError(
                    f"stage '{stage}': {len(done)} fragment(s) of '{table}' were computed with "
                    f"{was}; this run has {now}. Mixing them would give a column that means two "
                    f"things: run `sila run {stage} --recompute` to recompute every row"
                )
        try:
            ds.update_field_metadata({n: dict(facts) for n in names})
            return
        except (OSError, ValueError, RuntimeError) as e:  # a concurrent commit: re-read, retry
            log.info("stamping %s columns: %s (retry %d)", stage, e, attempt + 1)
            time.sleep(0.05 * (attempt + 1))
    raise StaleColumnsError(f"stage '{stage}': could not record its column metadata on '{table}'")
