"""`sila explain ID` (why a row is what it is) and `sila errors` (row errors, grouped, with
their fix): the questions of a first hour with a lake."""

from __future__ import annotations

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
def explain(
    row_id: Annotated[str, typer.Argument(help="a row id (sources or clips), or its start")],
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """Why a row is what it is: each stage's columns, version, model, settings and job, its
    decisions with the thresholds crossed, and the columns each was computed from."""
    from sila.coordinator.ops.explain import explain as explain_row
    from sila.coordinator.ops.explain import explain_lines

    out = explain_row(open_lake(lake, storage_option), row_id)
    if as_json:
        emit_json({"ok": True, **out})
        return
    for line in explain_lines(out):
        console.print(line, markup=False, highlight=False)


@handle_errors
def errors(
    stage: Annotated[str | None, typer.Option(help="only this stage's errors")] = None,
    examples: Annotated[int, typer.Option(help="example rows per message class")] = 3,
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """Row errors by stage and message class: counts, example rows and the fix."""
    from sila.coordinator.ops.errors import error_lines, row_errors

    out = row_errors(open_lake(lake, storage_option), stage, examples)
    if as_json:
        emit_json({"ok": True, **out})
        return
    for line in error_lines(out):
        console.print(line, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add `sila explain` and `sila errors` to the app."""
    app.command(name="explain")(explain)
    app.command(name="errors")(errors)
