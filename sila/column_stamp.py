"""Facts a stage learns only at setup (the model really loaded, random weights, a fit id),
written into its columns' field metadata so the table says how each column was made.

A stage declares them (`Stage.column_facts()`); the platform stamps them onto the existing
columns after `setup()` (a metadata-only commit, retried on a concurrent commit) and carries
them over when it re-creates the columns (a `--recompute` reset). Which fragments hold values
of other facts is the coordinator's per-fragment work identity (the stage's `model_identity`).
"""

from __future__ import annotations

import logging
import time

from sila.errors import StaleColumnsError
from sila.schema import owner

log = logging.getLogger(__name__)


def column_facts(ds, stage: str) -> dict[str, str]:
    """The `sila.*` facts of a stage's first owned column (all of them carry the same)."""
    for f in ds.schema:
        if owner(f) == stage:
            return {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
    return {}


def table_facts(schema) -> dict[str, dict[str, str]]:
    """Every stage's column facts on a table, by stage name (what `StageContext.facts` holds)."""
    out: dict[str, dict[str, str]] = {}
    for f in schema:
        st = owner(f)
        if st is not None and st not in out:
            out[st] = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
    return out


def stamp_columns(
    lake, table: str, stage: str, facts: dict[str, str], guarded: list[str] | None = None
) -> None:
    """Record `facts` on every column `stage` owns in `table`.

    `guarded` keys must not change while fragments hold outputs: a change raises
    StaleColumnsError naming `sila run STAGE --recompute`.
    """
    from sila.coordinator.discovery import holding_values

    if not facts or not lake.has_table(table):
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
            done = holding_values(ds, stage)  # done or not: values a change would mix with
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
