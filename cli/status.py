"""`sila status` and `sila stages`: what the lake holds and which stages exist."""

from __future__ import annotations

import os

import typer
from rich import box
from rich.table import Table
from sila.cli.output import (
    JsonOpt,
    LakeOpt,
    StorageOpt,
    console,
    emit_json,
    fail,
    handle_errors,
    open_lake,
)
from sila.coordinator.ops.keep_rates import keep_rate_lines
from sila.coordinator.store import is_remote, local_path


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
    if not is_remote(lk.uri) and not os.path.isdir(local_path(lk.uri)):
        # say so, and create nothing: a typo in --lake must not leave an empty lake behind
        fail(
            f"no lake at {lk.uri}: `sila ingest PATH --lake {lk.uri}` creates one "
            "(or set $SILA_LAKE)",
            as_json,
        )
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
            for line in stage_notes(t):
                console.print(line)
            for line in keep_rate_lines(t):  # decision stages: keep rates
                console.print(line, markup=False, highlight=False)
    print_activity(st)


def stage_table(t: dict) -> Table:
    """One table's stages as `sila status` shows them: done, pending, errors, coverage, version.
    Stage names are never cut; what a version needs to say (stale code, random weights) is a
    short mark here and a line under the table (`stage_notes`), so the table fits 80 columns."""
    # partial / stale / deferred columns only where some stage has them: narrow screens
    extra = [
        k
        for k in ("partial", "stale", "deferred")
        if any(d.get(f"fragments_{k}") for d in t["stages"].values())
    ]
    # no vertical rules or edge padding: 80 columns hold every stage name whole
    tab = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    tab.add_column("stage", no_wrap=True, min_width=max(map(len, t["stages"]), default=5))
    for name in ("done", "pending", *extra, "errors", "coverage"):
        tab.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    tab.add_column("version", overflow="fold", min_width=7)
    for s, d in t["stages"].items():
        ver = _short_version(d["version"])
        if _code_changed(d):
            ver += " [red]STALE[/]"
        if d.get("random_weights"):
            ver += " [bold red]RANDOM[/]"
        cov = "-" if d["coverage"] is None else f"{d['coverage']:.0%}"
        cells = {
            "partial": str(d.get("fragments_partial", 0)),
            "stale": str(d.get("fragments_stale", 0)),
            "deferred": str(d.get("fragments_deferred", 0)),
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


def _short_version(version) -> str:
    """A version as the table shows it: a rules digest abbreviated as git abbreviates hashes
    ("1+rebd7ee68ae" -> "1+rebd7ee"); several versions joined; `--json` has them whole."""
    if isinstance(version, list):
        return ", ".join(map(_short_version, version))
    head, sep, digest = str(version).partition("+r")
    return head + (sep + digest[:6] if sep else "")


def _code_changed(d: dict) -> bool:
    return bool(
        d["stale_fragments"] and d["current_version"] and d["current_version"] != d["version"]
    )


def stage_notes(t: dict) -> list[str]:
    """The lines under a stage table: stale code (with its command), random weights, deferred
    fragments and what they wait on."""
    out = []
    for s, d in t["stages"].items():
        if _code_changed(d):
            out.append(
                f"  [red]{s}[/] is stale (code is {d['current_version']}): "
                f"`sila run {s} --recompute`"
            )
        if d.get("random_weights"):
            out.append(f"  [bold red]{s}[/] has RANDOM WEIGHTS (--allow-random-weights)")
        if d.get("fragments_deferred") and d.get("deferred_on"):
            out.append(
                f"  {s}: {d['fragments_deferred']} fragment(s) wait on "
                f"{', '.join(d['deferred_on'])}"
            )
    return out


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
