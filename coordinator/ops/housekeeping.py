"""Housekeeping: job-record retention, `sila gc` and `sila remove --where`.

Nothing is deleted without an explicit command: `gc` is a dry run unless `apply=True`, and
`remove` lists what it would take away before doing it when `apply=False`.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

from sila.coordinator.leases import LeaseStore
from sila.coordinator.ops.jobs import JobLog

from sila.errors import SilaError

log = logging.getLogger(__name__)

KEEP_JOBS = 200  # job records kept per lake (newest first); older ones go with `sila gc`


def job_records(lake, limit: int | None = None, stage: str | None = None) -> list[dict]:
    jobs = JobLog(lake.store).all()
    if stage:
        jobs = [j for j in jobs if j.get("stage") == stage]
    return jobs[-limit:] if limit else jobs


def find_job(lake, job_id: str) -> dict:
    jobs = JobLog(lake.store).all()
    hits = [j for j in jobs if j.get("job") == job_id] or [
        j for j in jobs if str(j.get("job", "")).startswith(job_id)
    ]
    if not hits:
        raise SilaError(f"no job '{job_id}' in {lake.uri} (see `sila jobs ls`)")
    if len(hits) > 1:
        raise SilaError(f"'{job_id}' matches {len(hits)} jobs: give more of the id")
    return hits[-1]


def job_log(lake, job: dict) -> str:
    """The job's log text (from the path its record names, else `jobs/<id>.log`)."""
    key = job.get("log") or f"jobs/{job['job']}.log"
    key = key.split("_sila/", 1)[-1]
    raw = lake.store.get(key)
    return raw.decode(errors="replace") if raw else ""


def compaction_refusal(lake, tables: list[str] | None = None) -> str | None:
    """Why compacting `tables` now would make the table lie (None: it is safe).

    Compaction rewrites every column of the fragments it merges into new data files: a stage's
    column then exists for rows it never computed (they read as null = "done"). So a table is
    compacted only while no lease is live and every stage on it is complete: no pending,
    partial, deferred or stale fragment."""
    from sila.coordinator.ops.status import lake_status
    from sila.coordinator.state import compaction_blockers

    live = LeaseStore(lake.store).live()
    if live:
        return (
            f"{len(live)} lease(s) are live (a `sila run` is working): compaction would conflict "
            "with it and renumber its fragments; wait for it to finish (see `sila status`)"
        )
    partial = compaction_blockers(lake.store)
    status = lake_status(lake)["tables"]
    keys = ("fragments_pending", "fragments_partial", "fragments_deferred", "stale_fragments")
    for name in tables or list(status):
        for stage, st in status.get(name, {}).get("stages", {}).items():
            open_ = sum(int(st.get(k) or 0) for k in keys)
            if open_ or f"{name}.{stage}" in partial:
                return (
                    f"stage '{stage}' is not complete on '{name}' ({open_} fragment(s) pending, "
                    "partial, deferred or stale): compacting now would make its missing rows "
                    f"look computed; finish it first (`sila run {stage}`, see `sila status`)"
                )
    return None


def gc(
    lake, *, apply: bool = False, keep_jobs: int = KEEP_JOBS, older_than_days: float = 7.0
) -> dict:
    """Old table versions not pinned by a tag, orphaned checkpoints, old job records and logs."""
    store = lake.store
    plan: dict = {"applied": apply, "versions": {}, "checkpoints": [], "jobs": []}
    live = LeaseStore(store).live()
    if live and apply:
        raise SilaError(
            f"{len(live)} lease(s) are live: gc waits until no `sila run` is working (`sila status`)"
        )
    jobs = JobLog(store).all()
    running = {j["job"] for j in jobs if j.get("state") == "running"}
    finished = [j for j in jobs if j.get("state") != "running"]
    old = finished[: max(0, len(finished) - keep_jobs)]
    plan["jobs"] = [j["job"] for j in old]
    # checkpoints of fragments that no lease covers any more belong to abandoned work
    held = {(x["table"], x["stage"], x["fragment"]) for x in live}
    for e in store.list("checkpoints"):
        parts = e.key.split("/")
        if len(parts) >= 5 and (parts[1], parts[2], parts[3]) not in held:
            plan["checkpoints"].append(e.key)
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    for name in lake.tables():
        ds = lake.table(name)
        tagged = {t["version"] for t in ds.tags.list().values()}
        versions = [v for v in ds.versions() if v["version"] != ds.version]
        drop = [
            v["version"]
            for v in versions
            if v["version"] not in tagged and _ts(v["timestamp"]) < cutoff
        ]
        deleted = sum(
            f.physical_rows - f.count_rows() for f in ds.get_fragments() if f.deletion_file()
        )
        plan["versions"][name] = {
            "remove": len(drop),
            "pinned_by_tags": sorted(tagged),
            "deleted_rows_to_purge": deleted,
        }
        if apply and deleted and (why := compaction_refusal(lake, [name])):
            raise SilaError(f"gc cannot purge the deleted rows of '{name}' yet: {why}")
        if apply and deleted:
            # Deleted rows (and their blob bytes) stay in data files until rewritten; safe now
            # because no lease is live (compaction renumbers fragments).
            ds.optimize.compact_files(
                materialize_deletions=True, materialize_deletions_threshold=0.0
            )
            ds = lake.table(name)
        if apply and (drop or deleted):
            ds.cleanup_old_versions(
                older_than=timedelta(days=older_than_days),
                delete_unverified=older_than_days == 0,
                error_if_tagged_old_versions=False,
            )
    if apply:
        for j in old:
            store.delete(f"jobs/{j['job']}.json")
            store.delete(f"jobs/{j['job']}.log")
        for key in plan["checkpoints"]:
            store.delete(key)
    plan["running_jobs"] = sorted(running)
    return plan


def _ts(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


def remove(lake, where: str, *, apply: bool = False) -> dict:
    """Remove the sources matching `where` and everything derived from them (a takedown).

    Clips of those sources go in the same command; index entries follow their rows (LanceDB
    indexes are over the table itself, so deleted rows leave every query at once). Exports
    whose manifests list removed samples are reported, not rewritten."""
    if not lake.has_table("sources"):
        raise SilaError(f"lake {lake.uri} has no sources table")
    src = lake.table("sources")
    ids = src.to_table(columns=["id"], filter=where).column("id").to_pylist()
    out: dict = {"applied": apply, "sources": len(ids), "clips": 0, "exports": []}
    if not ids:
        return out
    quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)
    derived = {}
    for name in lake.tables():
        if name == "sources":
            continue
        ds = lake.table(name)
        if "source_id" in ds.schema.names:
            derived[name] = ds.count_rows(filter=f"source_id IN ({quoted})")
    out["derived"] = derived
    out["clips"] = derived.get("clips", 0)
    out["dangling_after"] = _references_to(lake, derived, quoted)
    out["exports"] = _exports_with(lake, set(ids))
    if apply:
        for name in derived:
            lake.table(name).delete(f"source_id IN ({quoted})")
        src.delete(f"id IN ({quoted})")
        out["removed_at"] = time.time()
    return out


def _references_to(lake, derived: dict, quoted_sources: str) -> dict[str, int]:
    """Rows outside the takedown whose `<stage>_of` points at a row it removes (a duplicate of a
    removed representative): their stage must be recomputed (`sila run STAGE --recompute`)."""
    from sila.schema import owner

    out: dict[str, int] = {}
    for name in derived:
        ds = lake.table(name)
        gone = f"(select id from {name} where source_id IN ({quoted_sources}))"
        for f in ds.schema:
            if f.name.endswith("_of") and owner(f) and pa_is_string(f):
                n = lake.sql(
                    f"select count(*) as n from {name} where {f.name} in {gone} "
                    f"and source_id not in ({quoted_sources})"
                )["n"][0].as_py()
                if n:
                    out[owner(f)] = out.get(owner(f), 0) + n
    return out


def pa_is_string(f) -> bool:
    import pyarrow as pa

    return pa.types.is_string(f.type) or pa.types.is_large_string(f.type)


def _exports_with(lake, source_ids: set[str]) -> list[str]:
    hits = []
    for e in lake.store.list("exports"):
        if not e.key.endswith(".json"):
            continue
        try:
            man = json.loads(lake.store.get(e.key) or b"{}")
        except ValueError:
            continue
        if source_ids & set(man.get("source_ids", [])):
            hits.append(man.get("out") or e.key)
    return hits
