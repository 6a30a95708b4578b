"""`sila run STAGE`: compute a stage's missing outputs, then say what the run did."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from sila.cli.output import (
    JsonOpt,
    LakeOpt,
    StorageOpt,
    console,
    emit_json,
    handle_errors,
    open_lake,
)
from sila.coordinator.ops.dry_run import plan_run
from sila.coordinator.options import RunOptions

from sila.lake import Lake


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
        print_dry_run(lk, stage, opts, as_json)
        return
    job = lk.run(stage, opts)
    if as_json:
        emit_json({"ok": True, **job, "seconds": round(time.monotonic() - t0, 2)})
        return
    print_summary(job, time.monotonic() - t0)


def print_dry_run(lk: Lake, stage: str, opts: RunOptions, as_json: bool) -> None:
    """`--dry-run`: the rows and model calls the run would make, computing nothing."""
    plan = plan_run(lk, stage, opts)
    if as_json:
        emit_json({"ok": True, "dry_run": plan.to_dict()})
        return
    for line in plan.lines():
        console.print(line, markup=False)


def print_summary(job: dict, seconds: float) -> None:
    """What a finished run did, for people: fragments, rows, errors, commits, gate, pools."""
    p = job["progress"]
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
        + f" in {seconds:.1f} s (job {job['job']})"
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


def register(app: typer.Typer) -> None:
    """Add `sila run` to the app."""
    app.command(name="run")(run)
