"""Operating SILA from the command line: pipelines, jobs, doctor, skill, remove, gc."""

from __future__ import annotations

import datetime as dt
import time
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
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

pipeline_app = typer.Typer(help="Run a recipe's stages in dependency order.", no_args_is_help=True)
jobs_app = typer.Typer(help="Job records: state, progress, errors, logs.", no_args_is_help=True)

SKILL = Path(str(resources.files("sila") / "agent_skill.md"))


def _lake(lake: str, storage: list[str] | None):
    return open_lake(lake, storage)


def _when(t) -> str:
    return dt.datetime.fromtimestamp(float(t)).strftime("%m-%d %H:%M:%S") if t else "-"


@pipeline_app.command("run")
@handle_errors
def pipeline_run(
    recipe: Annotated[str, typer.Argument(help="recipe name in datasets/ or a .toml path")],
    lake: LakeOpt = "",
    until: Annotated[str | None, typer.Option(help="run this stage and what it needs")] = None,
    only: Annotated[list[str] | None, typer.Option(help="run only these stages")] = None,
    workers: Annotated[int, typer.Option(help="fragment workers per stage job")] = 1,
    executor: Annotated[str, typer.Option(help="auto | inline | processes | ray")] = "auto",
    sequential: Annotated[bool, typer.Option(help="one stage at a time")] = False,
    skip: Annotated[
        list[str] | None, typer.Option(help="leave this stage out (repeatable)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="show the order, overlaps and work due; run nothing")
    ] = False,
    allow_random_weights: Annotated[
        bool, typer.Option(help="model stages without weights run with random ones (recorded)")
    ] = False,
    endpoint_url: Annotated[
        str | None, typer.Option(help="model endpoint for the stages that need one")
    ] = None,
    on_success: Annotated[str | None, typer.Option(help="command run with the record path")] = None,
    on_failure: Annotated[str | None, typer.Option(help="command run with the record path")] = None,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """Run every stage of RECIPE; a second run does only what is missing."""
    from sila.coordinator.ops.hooks import record_path, run_hook

    lk = _lake(lake, storage_option)
    if dry_run:
        from sila.coordinator.ops.pipeline import plan_pipeline

        dry = plan_pipeline(
            lk, recipe, only=only, until=until, skip=skip, concurrent=not sequential
        )
        if as_json:
            emit_json(dry)
            return
        tab = Table("stage", "after", "start", "now")
        for row in dry["stages"]:
            tab.add_row(row["stage"], ", ".join(row["after"]) or "-", row["start"], row["now"])
        console.print(tab)
        console.print("dry run: nothing computed or written")
        return

    def event(kind: str, stage: str, out=None) -> None:
        if as_json:
            return
        if kind == "start":
            console.print(f"  [cyan]start[/] {stage}")
        elif kind == "end":
            console.print(f"  [green]done[/]  {stage}: {out.rows} rows, {out.row_errors} errors")
        elif kind == "skip":
            console.print(f"  [yellow]skip[/]  {stage}: {out.message}")
        else:
            console.print(f"  [red]failed[/] {stage}: {out.message}")

    res = lk.pipeline(
        recipe,
        until=until,
        only=only,
        skip=skip,
        concurrent=not sequential,
        on_event=event,
        workers=workers,
        executor=executor,
        random_weights=allow_random_weights,
        **({"endpoint_url": endpoint_url} if endpoint_url else {}),
    )
    run_hook(on_success if res["ok"] else on_failure, record_path(lk, res["record"]))
    if as_json:
        emit_json(res)
    else:
        tab = Table("stage", "state", "after", "fragments", "rows", "errors", "seconds")
        for o, n in zip(res["stages"], res["order"], strict=True):
            tab.add_row(
                o["stage"],
                o["state"],
                ", ".join(n["after"]) or "-",
                str(o["fragments"]),
                str(o["rows"]),
                str(o["row_errors"]),
                str(o["seconds"]),
            )
        console.print(tab)
        console.print(f"pipeline {'succeeded' if res['ok'] else 'FAILED'} in {res['seconds']} s")
    if not res["ok"]:
        raise typer.Exit(1)


@jobs_app.command("ls")
@handle_errors
def jobs_ls(
    lake: LakeOpt = "",
    stage: Annotated[str | None, typer.Option(help="only this stage's jobs")] = None,
    limit: Annotated[int, typer.Option(help="newest N")] = 20,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """List jobs, newest last."""
    from sila.coordinator.ops.doctor import dead_here
    from sila.coordinator.ops.housekeeping import job_records

    jobs = job_records(_lake(lake, storage_option), limit, stage)
    for j in jobs:
        if j.get("state") == "running" and dead_here(j.get("host"), j.get("pid")):
            j["state"] = "dead"
    if as_json:
        emit_json({"ok": True, "jobs": jobs})
        return
    tab = Table("job", "state", "executor", "started", "heartbeat", "fragments", "rows", "errors")
    for j in jobs:
        p = j.get("progress", {})
        state = j.get("state", "?")
        if state == "running" and dead_here(j.get("host"), j.get("pid")):
            state = "dead"  # killed without a final state: `sila doctor` says how to resume
        tab.add_row(
            j["job"],
            state,
            f"{j.get('executor')} x{j.get('workers')}",
            _when(j.get("started_at")),
            _when(j.get("heartbeat_at")),
            f"{p.get('fragments_done', 0)}/{p.get('fragments_total', 0)}",
            str(p.get("rows", 0)),
            str(p.get("row_errors", 0)),
        )
    console.print(tab)


@jobs_app.command("show")
@handle_errors
def jobs_show(
    job: Annotated[str, typer.Argument(help="job id (or a unique prefix)")],
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """One job's whole record: state, host/pid, heartbeat, progress, pools, errors, command."""
    from sila.coordinator.ops.housekeeping import find_job

    rec = find_job(_lake(lake, storage_option), job)
    if as_json:
        emit_json({"ok": True, **rec})
        return
    p = rec.get("progress", {})
    console.print(
        f"[bold]{rec['job']}[/]  {rec.get('state')}  ({rec.get('message') or 'no message'})"
    )
    console.print(f"  stage {rec['stage']} v{rec.get('stage_version')} on '{rec['table']}'")
    console.print(
        f"  {rec.get('executor')} x{rec.get('workers')} on {rec.get('host')} pid {rec.get('pid')}"
    )
    console.print(
        f"  started {_when(rec.get('started_at'))}, heartbeat {_when(rec.get('heartbeat_at'))}, "
        f"ended {_when(rec.get('ended_at'))}"
    )
    console.print("  progress " + ", ".join(f"{k}={v}" for k, v in p.items()))
    for name, m in (rec.get("metrics") or {}).get("pools", {}).items():
        console.print(f"  pool {name}: " + ", ".join(f"{k}={v}" for k, v in m.items()))
    for e in rec.get("errors", [])[:10]:
        console.print(f"  [yellow]error[/] {e}")
    console.print("  command: " + " ".join(rec.get("argv", [])))


@jobs_app.command("logs")
@handle_errors
def jobs_logs(
    job: Annotated[str, typer.Argument(help="job id (or a unique prefix)")],
    lake: LakeOpt = "",
    storage_option: StorageOpt = None,
) -> None:
    """Print a job's log file (unexpected-error tracebacks, warnings)."""
    from sila.coordinator.ops.housekeeping import find_job, job_log

    lk = _lake(lake, storage_option)
    text = job_log(lk, find_job(lk, job))
    console.print(text or "(this job wrote no log lines)", markup=False, highlight=False)


def doctor(
    lake: LakeOpt = "",
    stall_after: Annotated[float, typer.Option(help="seconds without heartbeat = stalled")] = 300,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """Find stalled/dead/failed jobs, orphan leases, stale columns, pending work and row errors,
    each with the command that fixes it. Exit status 1 when something needs action."""
    res = _lake(lake, storage_option).doctor(stall_after_s=stall_after)
    if as_json:
        emit_json(res)
    elif not res["findings"]:
        console.print("[green]healthy[/]: nothing needs attention")
    else:
        for f in res["findings"]:
            color = "red" if f["severity"] == "action" else "yellow"
            console.print(f"[{color}]{f['kind']}[/] {f['message']}")
            if f.get("fix"):
                console.print(f"    fix: [bold]{f['fix']}[/]")
    if not res["ok"]:
        raise typer.Exit(1)


def skill() -> None:
    """Print the skill document for orchestration agents (how to run, watch and recover SILA)."""
    if not SKILL.is_file():
        fail(f"skill document missing at {SKILL}")
    typer.echo(SKILL.read_text())


def remove(
    where: Annotated[str, typer.Option(help="SQL over sources: which sources to take down")],
    lake: LakeOpt = "",
    apply: Annotated[
        bool, typer.Option(help="really delete (default: show what would go)")
    ] = False,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """Remove sources and everything derived from them (clips, index entries); run `sila gc
    --apply --older-than 0` afterwards to purge their bytes from old versions."""
    from sila.coordinator.ops.housekeeping import remove as do_remove

    res = do_remove(_lake(lake, storage_option), where, apply=apply)
    if as_json:
        emit_json({"ok": True, **res})
        return
    verb = "removed" if apply else "would remove"
    console.print(f"{verb} {res['sources']} source(s) and {res.get('derived', {})} derived rows")
    for e in res.get("exports", []):
        console.print(f"  [yellow]export contained them[/]: {e}")
    for stage, n in res.get("dangling_after", {}).items():
        console.print(
            f"  [yellow]{n} row(s) of '{stage}' point at removed rows[/]: run "
            f"`sila run {stage} --recompute` afterwards (`sila doctor` lists it)"
        )
    if not apply and res["sources"]:
        console.print("  (dry run: add --apply)")


def gc(
    lake: LakeOpt = "",
    apply: Annotated[bool, typer.Option(help="really delete (default: dry run)")] = False,
    older_than: Annotated[float, typer.Option(help="days: versions younger are kept")] = 7.0,
    keep_jobs: Annotated[int, typer.Option(help="job records kept")] = 200,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """Old table versions not pinned by an export's tag, orphaned checkpoints, old job records."""
    from sila.coordinator.ops.housekeeping import gc as do_gc

    t = time.monotonic()
    res = do_gc(
        _lake(lake, storage_option), apply=apply, keep_jobs=keep_jobs, older_than_days=older_than
    )
    res["seconds"] = round(time.monotonic() - t, 2)
    if as_json:
        emit_json({"ok": True, **res})
        return
    console.print(
        f"{'removed' if apply else 'would remove'}: {len(res['jobs'])} job record(s), "
        f"{len(res['checkpoints'])} orphaned checkpoint file(s)"
    )
    for name, v in res["versions"].items():
        console.print(
            f"  {name}: {v['remove']} old version(s), {v['deleted_rows_to_purge']} deleted row(s)"
            f" to purge; pinned: {v['pinned_by_tags'] or 'none'}"
        )
    if not apply:
        console.print("  (dry run: add --apply)")


def compact(
    lake: LakeOpt = "", as_json: JsonOpt = False, storage_option: StorageOpt = None
) -> None:
    """Compact small fragments; refused while a lease is live or any stage is incomplete on a
    table (compaction renumbers fragments and would make never-computed rows look done)."""
    from sila.coordinator.ops.housekeeping import compaction_refusal

    lk = _lake(lake, storage_option)
    why = compaction_refusal(lk)
    if why:
        fail(why, as_json)
    out = {}
    for name in lk.tables():
        m = lk.table(name).optimize.compact_files()
        out[name] = {"fragments_removed": m.fragments_removed, "fragments_added": m.fragments_added}
    if as_json:
        emit_json({"ok": True, "tables": out})
        return
    for name, v in out.items():
        console.print(
            f"{name}: {v['fragments_removed']} fragment(s) merged into {v['fragments_added']}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")
    app.add_typer(jobs_app, name="jobs")
    for fn in (doctor, skill, remove, gc, compact):
        app.command(fn.__name__)(handle_errors(fn))
