"""`sila status` and `sila stages`: what the lake holds and which stages exist."""

from __future__ import annotations

import typer
from rich.table import Table
from sila.cli.output import (
    JsonOpt,
    LakeOpt,
    StorageOpt,
    console,
    emit_json,
    handle_errors,
    open_lake,
)
from sila.coordinator.ops.keep_rates import keep_rate_lines


@handle_errors
def stages(as_json: JsonOpt = False) -> None:
    """List registered stages: where they come from, their table, inputs and outputs."""
    from sila.registry import registered

    rows = []
    for name, info in sorted(registered().items()):
        cls = info.cls
        rows.append(
            {
                "name": name,
                "origin": info.origin,
                "error": info.error,
                "table": cls.table if cls else None,
                "kind": cls.kind if cls else None,
                "inputs": list(cls.inputs) if cls else [],
                "outputs": [f"{f.name}: {f.type}" for f in cls.output_fields()] if cls else [],
                "version": cls.resolved_version() if cls else None,
            }
        )
    if as_json:
        emit_json({"stages": rows})
        return
    t = Table("stage", "table", "inputs", "outputs (owned columns)", "origin")
    for r in rows:
        t.add_row(
            r["name"],
            r["table"] or "[red]broken[/]",
            ", ".join(r["inputs"]),
            "\n".join(r["outputs"]) or (r["error"] or ""),
            r["origin"],
        )
    console.print(t)


@handle_errors
def status(lake: LakeOpt = "", as_json: JsonOpt = False, storage_option: StorageOpt = None) -> None:
    """Rows and fragments per table; per stage done / pending fragments, row errors, staleness."""
    lk = open_lake(lake, storage_option)
    st = lk.status()
    if as_json:
        emit_json(st)
        return
    if not st["tables"]:
        console.print(f"lake {lk.uri} has no tables yet: `sila ingest PATH --lake {lk.uri}`")
        return
    for name, t in st["tables"].items():
        console.print(
            f"[bold]{name}[/]: {t['rows']} rows in {t['fragments']} fragments (version {t['version']})"
        )
        if t["stages"]:
            console.print(stage_table(t))
            for line in keep_rate_lines(t):  # decision stages: keep rates
                console.print(line)
    print_activity(st)


def stage_table(t: dict) -> Table:
    """One table's stages as `sila status` shows them: done, pending, errors, coverage, version."""
    # partial / stale / deferred columns only where some stage has them: narrow screens
    extra = [
        k
        for k in ("partial", "stale", "deferred")
        if any(d.get(f"fragments_{k}") for d in t["stages"].values())
    ]
    tab = Table("stage", "done", "pending", *extra, "row errors", "coverage", "version")
    for s, d in t["stages"].items():
        code_changed = d["current_version"] and d["current_version"] != d["version"]
        ver = str(d["version"]) + (
            f" [red]STALE: code is {d['current_version']}; "
            f"{d['stale_fragments']} fragment(s) from an older version, "
            f"run `sila run {s} --recompute`[/]"
            if d["stale_fragments"] and code_changed
            else ""
        )
        if d.get("random_weights"):
            ver += " [bold red]RANDOM WEIGHTS (--allow-random-weights)[/]"
        cov = "-" if d["coverage"] is None else f"{d['coverage']:.0%}"
        cells = {
            "partial": str(d.get("fragments_partial", 0)),
            "stale": str(d.get("fragments_stale", 0)),
            "deferred": str(d.get("fragments_deferred", 0))
            + (f" (on {', '.join(d['deferred_on'])})" if d.get("deferred_on") else ""),
        }
        tab.add_row(
            s,
            str(d["fragments_done"]),
            str(d["fragments_pending"]),
            *[cells[k] for k in extra],
            str(d["errors"]),
            cov,
            ver,
        )
    return tab


def print_activity(st: dict) -> None:
    """Below the tables: vector indexes, live leases, running jobs, recent row failures."""
    for ix in st.get("indexes", []):
        kind = ix["plan"]["index_type"] if ix.get("plan") else "none"
        console.print(
            f"index on {ix['table']}.{ix['column']}: {kind}, unindexed rows {ix['unindexed_rows']}"
            + (f", recall@10 {ix['recall_at_10']}" if ix.get("recall_at_10") is not None else "")
            + (f" [red]STALE: {ix['stale']}[/]" if ix.get("stale") else "")
            + (" (search is exact)" if ix.get("exact") else "")
        )
    if st["leases"]:
        tab = Table("live lease", "owner", "age s", "heartbeat lag s", "segments done")
        for lease in st["leases"]:
            tab.add_row(
                f"{lease['table']}/{lease['stage']}/{lease['fragment']} gen {lease['gen']}",
                lease["owner"],
                str(lease["age_s"]),
                str(lease["heartbeat_lag_s"]),
                str(lease["segments_done"]),
            )
        console.print(tab)
    running = [j for j in st["jobs"] if j["state"] == "running"]
    for j in running:
        console.print(f"running job {j['job']}: {j['progress']['fragments_done']} fragments done")
    for j in st["jobs"][-3:]:
        if (j.get("progress") or {}).get("row_failures") and j.get("log"):
            console.print(
                f"job {j['job']}: {j['progress']['row_failures']} unexpected row failure(s), "
                f"tracebacks in {j['log']}"
            )


def register(app: typer.Typer) -> None:
    """Add `sila stages` and `sila status` to the app."""
    app.command(name="stages")(stages)
    app.command(name="status")(status)
