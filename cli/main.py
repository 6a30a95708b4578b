"""The `sila` command line: one function per command, `--json` on every one."""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer
from rich.table import Table
from sila.cli.output import JsonOpt, LakeOpt, StorageOpt, console, emit_json, fail, handle_errors

from sila.lake import Lake, default_lake_uri

app = typer.Typer(
    help="SILA: curate raw media into training-ready samples in one wide Lance table.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from sila.cli.endpoint import endpoint_app  # noqa: E402

app.add_typer(endpoint_app, name="endpoint")

from sila.cli.view import view as _view  # noqa: E402

app.command(name="view")(_view)

from sila.cli.ops import register as _register_ops  # noqa: E402

_register_ops(app)  # pipeline, jobs, doctor, skill, remove, gc

from sila.cli.search import register as _register_search  # noqa: E402

_register_search(app)  # search, index, dedup

from sila.cli.export import register as _register_export  # noqa: E402

_register_export(app)  # export wds, devtable, snapshot, card


def open_lake(uri: str | None, storage: list[str] | None = None) -> Lake:
    opts = {}
    for item in storage or []:
        k, sep, v = item.partition("=")
        if not sep:
            fail(f"--storage-option expects KEY=VALUE, got {item!r}")
        opts[k] = v
    return Lake(uri or default_lake_uri(), storage_options=opts)


@app.command()
@handle_errors
def init(lake: LakeOpt = "", as_json: JsonOpt = False, storage_option: StorageOpt = None) -> None:
    """Create an empty lake."""
    lk = open_lake(lake, storage_option).init()
    emit_json({"ok": True, "lake": lk.uri}) if as_json else console.print(f"lake ready at {lk.uri}")


@app.command()
@handle_errors
def ingest(
    paths: Annotated[
        list[str], typer.Argument(help="files, directories, globs or .jsonl/.csv manifests")
    ],
    lake: LakeOpt = "",
    reference: Annotated[
        bool, typer.Option(help="keep a path to the file instead of its bytes")
    ] = False,
    rows_per_fragment: Annotated[
        int, typer.Option(help="files per fragment (fragments are the unit of parallel work)")
    ] = 64,
    bytes_per_fragment: Annotated[
        str, typer.Option(help="stored bytes per fragment, e.g. 2GiB, 512MiB")
    ] = "2GiB",
    allow_outside: Annotated[
        bool,
        typer.Option(help="follow symlinks out of walked folders and manifest paths out of theirs"),
    ] = False,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """Add media to the `sources` table (content-hash ids: re-ingesting adds nothing)."""
    from sila.cli.ingest_output import ingest_command

    ingest_command(
        open_lake(lake, storage_option),
        paths,
        reference=reference,
        rows_per_fragment=rows_per_fragment,
        bytes_per_fragment=bytes_per_fragment,
        allow_outside=allow_outside,
        as_json=as_json,
    )


@app.command()
@handle_errors
def run(
    stage: Annotated[
        str, typer.Argument(help="registered name, path/to/file.py:Class or package.module:Class")
    ],
    lake: LakeOpt = "",
    workers: Annotated[int, typer.Option(help="fragment workers")] = 1,
    executor: Annotated[
        str,
        typer.Option(
            help="auto (Ray if --address/RAY_ADDRESS, processes if --workers > 1, else inline) | inline | processes | ray"
        ),
    ] = "auto",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default $RAY_ADDRESS)")
    ] = None,
    where: Annotated[
        str | None, typer.Option(help="SQL predicate: only matching rows are computed")
    ] = None,
    recompute: Annotated[
        bool, typer.Option(help="reset the stage's columns and compute everything")
    ] = False,
    retry_errors: Annotated[
        bool, typer.Option(help="recompute only rows whose <stage>_error is set")
    ] = False,
    recipe: Annotated[
        str | None, typer.Option(help="recipe name in datasets/ or a .toml path")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="stage setting KEY=VALUE (repeatable)")
    ] = None,
    segment_rows: Annotated[int | None, typer.Option(help="rows per checkpointed segment")] = None,
    lease_ttl: Annotated[float, typer.Option(help="lease time-to-live in seconds")] = 60.0,
    checkpoint_min_s: Annotated[
        float,
        typer.Option(
            help="checkpoint a segment once this many compute seconds are at stake (0: every segment)"
        ),
    ] = 1.0,
    endpoint_url: Annotated[
        str | None, typer.Option(help="use this model endpoint instead of starting one")
    ] = None,
    allow_random_weights: Annotated[
        bool, typer.Option(help="tests only: run a model stage with random weights (recorded)")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="print the rows and model calls a run would make; run nothing")
    ] = False,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """Run a stage over every row whose outputs are missing (one commit per batch of fragments)."""
    from sila.coordinator.options import RunOptions

    lk = open_lake(lake, storage_option)
    t0 = time.monotonic()
    opts = RunOptions(
        executor=executor,
        workers=workers,
        address=address,
        where=where,
        recompute=recompute,
        retry_errors=retry_errors,
        settings=set_,
        recipe=recipe,
        progress=not as_json,
        segment_rows=segment_rows,
        ttl=lease_ttl,
        endpoint_url=endpoint_url,
        allow_random_weights=allow_random_weights,
        checkpoint_min_s=checkpoint_min_s,
    )
    if dry_run:
        from sila.coordinator.ops.dry_run import plan_run

        plan = plan_run(lk, stage, opts)
        if as_json:
            emit_json({"ok": True, "dry_run": plan.to_dict()})
        for line in [] if as_json else plan.lines():
            console.print(line, markup=False)
        return
    job = lk.run(stage, opts)
    p = job["progress"]
    if as_json:
        emit_json({"ok": True, **job, "seconds": round(time.monotonic() - t0, 2)})
        return
    deferred = p.get("fragments_deferred", 0)
    if p["fragments_done"] == 0 and p["fragments_skipped"] == 0 and job.get("where"):
        console.print(
            f"[green]nothing new to compute[/] for --where {job['where']!r}; rows outside it stay "
            "pending (`sila status` shows the partial fragments)"
        )
        return
    if p["fragments_done"] == 0 and p["fragments_skipped"] == 0:
        console.print(
            f"[green]nothing to do[/]: every fragment of '{job['table']}' is done for "
            f"'{job['stage']}'"
            + (
                f", except {deferred} waiting for an upstream stage (see `sila status`)"
                if deferred
                else " (use --recompute or --retry-errors to redo)"
            )
        )
        return
    console.print(
        f"[bold]{job['stage']}[/]: {p['fragments_done']} fragment(s), {p['rows']} rows, "
        f"{p['row_errors']} row errors, {p['commits']} commit(s), segments computed "
        f"{p['segments_computed']} / reused {p['segments_reused']}"
        + (f", {p['children']} child rows" if p["children"] else "")
        + f" in {time.monotonic() - t0:.1f} s (job {job['job']})"
    )
    if deferred:
        console.print(f"  {deferred} fragment(s) deferred: an upstream stage is not done on them")
    if p.get("row_failures"):
        console.print(
            f"  {p['row_failures']} unexpected row failure(s): tracebacks in {job['log']}"
        )
    if job.get("where"):
        console.print("  --where ran a subset: the other rows stay pending (`sila status`)")
    gate = (job.get("metrics") or {}).get("gating")
    if gate and gate["rows_gated"]:
        saved = gate["model_calls_saved"]
        console.print(
            f"  gate {gate['where']}: skipped {gate['rows_gated']} rows"
            + (f", saved {saved} model calls" if saved else ""),
            markup=False,
        )
    for name, m in (job.get("metrics") or {}).get("pools", {}).items():
        console.print(
            f"  pool {name}: {m['actors']} actor(s) x {m['cpus_each']} CPU, {m['rows_per_s']} rows/s, "
            f"busy {m['busy_fraction']:.0%}, restarts {m['actor_restarts']}"
        )


@app.command()
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


@app.command()
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
            console.print(tab)
            from sila.coordinator.ops.keep_rates import keep_rate_lines

            for line in keep_rate_lines(t):  # decision stages: keep rates
                console.print(line)
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


@app.command()
@handle_errors
def sql(
    query: Annotated[str, typer.Argument(help="DuckDB SQL; lake tables are visible by name")],
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
    limit: int = 50,
    storage_option: StorageOpt = None,
) -> None:
    """Query the lake with DuckDB, e.g. `sila sql "select media_kind, count(*) from sources group by 1"`."""
    res = open_lake(lake, storage_option).sql(query)
    if as_json:
        emit_json({"columns": res.schema.names, "rows": res.to_pylist()})
        return
    t = Table(*res.schema.names)
    for row in res.slice(0, limit).to_pylist():
        t.add_row(*[_short(v) for v in row.values()])
    console.print(t)
    if res.num_rows > limit:
        console.print(f"... {res.num_rows - limit} more rows")


def _short(v) -> str:
    if isinstance(v, bytes | bytearray):
        return f"<{len(v)} bytes>"
    s = str(v)
    return s if len(s) < 80 else s[:77] + "..."


@app.command()
@handle_errors
def demo(
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
    media: Annotated[str | None, typer.Option(help="where to write the generated media")] = None,
) -> None:
    """Generate a small corpus, ingest it, run every stage, print a summary and what to try next."""
    from sila.demo.run import run_demo

    out = run_demo(
        lake or os.environ.get("SILA_LAKE") or "./demo/lake", media_dir=media, quiet=as_json
    )
    if as_json:
        emit_json(out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
