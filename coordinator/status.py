"""What `sila status` reports: per table rows and fragments, per stage done/pending/errors/stale,
from the manifest plus one error-column count; live leases and recent jobs."""

from __future__ import annotations

import time

from sila.coordinator.discovery import split_fragments
from sila.coordinator.jobs import JobLog
from sila.coordinator.leases import LeaseStore

from sila.schema import owner, spec_of, version_of


def current_version(spec: str | None) -> str | None:
    """The version the stage's code has now, when it can be found again (else None)."""
    if not spec:
        return None
    try:
        from sila.registry import resolve

        return resolve(spec).resolved_version()
    except Exception:  # noqa: BLE001 - status must not fail because a user file moved
        return None


def table_status(ds, name: str) -> dict:
    frags = ds.get_fragments()
    frag_rows = {f.fragment_id: f.count_rows() for f in frags}  # metadata: physical - deleted
    rows = sum(frag_rows.values())
    stages: dict[str, dict] = {}
    fields_by_stage: dict[str, list] = {}
    names = set(ds.schema.names)
    for f in ds.schema:
        o = owner(f)
        # a stage's progress shows on the table it runs on (the one holding its error column),
        # not on the child rows an explode stage created
        if o and o != "ingest" and f"{o}_error" in names:
            fields_by_stage.setdefault(o, []).append(f)
    for stage, fields in fields_by_stage.items():
        done, pending = split_fragments(ds, stage)
        err = f"{stage}_error"
        errors = (
            ds.count_rows(filter=f"{err} IS NOT NULL") if err in ds.schema.names and done else 0
        )
        versions = sorted({v for f in fields if (v := version_of(f))})
        spec = next((s for f in fields if (s := spec_of(f))), None)
        now = current_version(spec)
        stale = bool(now and versions and now not in versions)
        done_rows = sum(frag_rows[d.id] for d in done)
        stages[stage] = {
            "fragments_done": len(done),
            "fragments_pending": len(pending),
            "errors": errors,
            "version": versions[0] if len(versions) == 1 else versions,
            "current_version": now,
            "stale_fragments": len(done) if stale else 0,
            "coverage": round(done_rows / rows, 4) if rows else (1.0 if not pending else None),
        }
    return {"rows": rows, "fragments": len(frags), "version": ds.version, "stages": stages}


def lake_status(lake) -> dict:
    out: dict = {"lake": lake.uri, "tables": {}}
    for name in lake.tables():
        out["tables"][name] = table_status(lake.table(name), name)
    now = time.time()
    leases = []
    for lease in LeaseStore(lake.store).live():
        leases.append(
            {
                "table": lease["table"],
                "stage": lease["stage"],
                "fragment": lease["fragment"],
                "gen": lease["gen"],
                "owner": lease["owner"],
                "job": lease["job"],
                "age_s": round(now - lease["acquired_at"], 1),
                "heartbeat_lag_s": round(now - lease.get("renewed_at", lease["acquired_at"]), 1),
                "segments_done": lease.get("segments_done", 0),
            }
        )
    out["leases"] = leases
    out["jobs"] = [
        {
            k: j.get(k)
            for k in (
                "job",
                "stage",
                "table",
                "state",
                "started_at",
                "ended_at",
                "heartbeat_at",
                "progress",
                "message",
            )
        }
        for j in JobLog(lake.store).all()[-10:]
    ]
    return out
