"""What `sila status` reports: per table rows and fragments, per stage done/pending/errors/stale,
from the manifest plus one error-column count; live leases and recent jobs."""

from __future__ import annotations

import time

from sila.coordinator.discovery import fragment_states
from sila.coordinator.leases import LeaseStore
from sila.coordinator.ops.jobs import JobLog
from sila.coordinator.ops.keep_rates import keep_rates
from sila.coordinator.state import DEFERRED, DONE, PARTIAL, PENDING, STALE

from sila.filters import logic_part
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


STATUS_SCHEMA = "sila.status/1"  # docs/status-json.md; bump when a key changes meaning


def table_status(
    ds,
    name: str,
    lake=None,
    identities: dict[str, str] | None = None,
    settings: dict[str, dict] | None = None,
) -> dict:
    """One table's entry of `sila status --json` (schema: docs/status-json.md). `identities` and
    `settings`: per stage, its latest job's (what "stale" and the gate are judged against)."""
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
        versions = sorted({v for f in fields if (v := version_of(f))})
        spec = next((s for f in fields if (s := spec_of(f))), None)
        now = current_version(spec)
        # a stage whose version carries its rules (sila.filters.SettingsVersion) is not stale
        # when only its rules differ from the defaults: the settings identity covers that
        code_changed = bool(now and versions and logic_part(now) not in map(logic_part, versions))
        last = ((identities or {}).get(stage), (settings or {}).get(stage))
        counts = _fragment_states(ds, stage, lake, *last)
        err = f"{stage}_error"
        has_values = counts[DONE] + counts[PARTIAL] + counts[STALE]
        errors = ds.count_rows(filter=f"{err} IS NOT NULL") if err in names and has_values else 0
        if code_changed:  # every computed fragment holds another version's outputs
            counts[STALE] += counts[DONE]
            counts[DONE] = 0
        done_rows = sum(frag_rows[i] for i in counts["done_ids"])
        stages[stage] = {
            "fragments_done": counts[DONE],
            "fragments_pending": counts[PENDING],
            "fragments_partial": counts[PARTIAL],
            "fragments_stale": counts[STALE],
            "fragments_deferred": counts[DEFERRED],
            "deferred_on": sorted(counts["waiting"]),
            "errors": errors,
            "version": versions[0] if len(versions) == 1 else versions,
            "current_version": now,
            "stale_fragments": counts[STALE],
            # computed with --allow-random-weights (sila.column_stamp records it per column)
            "random_weights": any(
                (f.metadata or {}).get(b"sila.random_weights") == b"true" for f in fields
            ),
            "coverage": round(done_rows / rows, 4)
            if rows
            else (1.0 if not counts[PENDING] else None),
            "columns": {
                f.name: {
                    "type": str(f.type),
                    "version": version_of(f),
                    "role": "error" if f.name == err else "output",
                    "row_errors": errors if f.name == err else None,
                }
                for f in fields
            },
        }
    for stage, rates in keep_rates(ds).items():  # decision stages: kept / rejected counts
        if stage in stages:
            stages[stage]["keep"] = rates
    return {"rows": rows, "fragments": len(frags), "version": ds.version, "stages": stages}


def _fragment_states(ds, stage: str, lake, identity: str | None, settings: dict | None) -> dict:
    """Counts of done / pending / partial / stale / deferred fragments, judged as a run judges
    them (discovery.fragment_states: manifest + records; without a lake, the manifest only)."""
    out = {DONE: 0, PENDING: 0, PARTIAL: 0, STALE: 0, DEFERRED: 0, "done_ids": [], "waiting": set()}
    store = lake.store if lake is not None else None
    for w in fragment_states(ds, stage, store, identity, settings):
        out[w.status] += 1
        if w.status == DONE:
            out["done_ids"].append(w.ref.id)
        out["waiting"].update(w.waiting_for)
    return out


def lake_status(lake) -> dict:
    jobs = JobLog(lake.store).all()
    identities = {}  # per stage: the settings identity of its latest job ("stale" is relative)
    settings = {}  # per stage: its latest job's settings (its gate is judged with them)
    for j in jobs:
        if j.get("identity"):
            identities[j["stage"]] = j["identity"]
        if j.get("settings"):
            settings[j["stage"]] = j["settings"]
    out: dict = {"schema": STATUS_SCHEMA, "lake": lake.uri, "tables": {}}
    for name in lake.tables():
        out["tables"][name] = table_status(lake.table(name), name, lake, identities, settings)
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
    from sila.retrieval.maintain import lake_index_summary

    out["indexes"] = lake_index_summary(lake)  # vector indexes: unindexed rows, staleness
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
                "log",
                "where",
            )
        }
        for j in jobs[-10:]
    ]
    return out
