"""`sila whatif STAGE --set rule=value`: a decision stage's rules changed, judged from the stored
signals before anything runs; `--apply` then runs the stage with them."""

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


@handle_errors
def whatif(
    stage: Annotated[str, typer.Argument(help="a decision stage (its `<stage>_keep` column)")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="rule KEY=VALUE or STAGE.KEY=VALUE (repeatable)"),
    ] = None,
    apply: Annotated[
        bool, typer.Option(help="then run the stage with these rules (only it recomputes)")
    ] = False,
    recipe: Annotated[
        str | None, typer.Option(help="recipe name in datasets/ or a .toml path")
    ] = None,
    flips: Annotated[int, typer.Option(help="flipped rows to list")] = 20,
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """What changed rules would keep and reject (per group, the rows that flip), computed from
    the stored signals without running the stage; `--apply` runs it as a normal run."""
    from sila.coordinator.ops.whatif import apply as apply_rules
    from sila.coordinator.ops.whatif import what_if

    lk = open_lake(lake, storage_option)
    result = what_if(lk, stage, set_ or [], recipe=recipe, flips_shown=flips)
    out = result.to_dict()
    if apply:
        t0 = time.monotonic()
        job = apply_rules(lk, result)
        stored = _stored_keep(lk, result)
        out["applied"] = {
            "job": job["job"],
            "state": job["state"],
            "rows": job["progress"]["rows"],
            "seconds": round(time.monotonic() - t0, 2),
            "equals_prediction": stored == result.predicted,
        }
    if as_json:
        emit_json({"ok": True, **out})
        return
    for line in result.lines() if not apply else result.lines()[:-1]:
        console.print(line, markup=False, highlight=False)
    if apply:
        a = out["applied"]
        same = "equals the prediction" if a["equals_prediction"] else "DIFFERS from the prediction"
        console.print(
            f"applied: job {a['job']} {a['state']}, {a['rows']} rows in {a['seconds']} s; "
            f"the stored decision {same}",
            markup=False,
            highlight=False,
        )


def _stored_keep(lk, result) -> dict[str, bool | None]:
    """The stage's stored decision for the rows the what-if judged."""
    ds = lk.table(result.table)
    data = ds.to_table(columns=["id", f"{result.stage}_keep"])
    stored = dict(zip(*(data.column(i).to_pylist() for i in range(2)), strict=True))
    return {i: stored.get(i) for i in result.predicted}


def register(app: typer.Typer) -> None:
    """Add `sila whatif` to the app."""
    app.command(name="whatif")(whatif)
