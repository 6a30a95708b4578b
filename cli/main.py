"""The `sila` command line: one function per command, `--json` on every one."""

from __future__ import annotations

from typing import Annotated

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

from sila.cli.run import register as _register_run  # noqa: E402

_register_run(app)  # run

from sila.cli.status import register as _register_status  # noqa: E402

_register_status(app)  # stages, status

from sila.cli.whatif import register as _register_whatif  # noqa: E402

_register_whatif(app)  # whatif

from sila.cli.explain import register as _register_explain  # noqa: E402

_register_explain(app)  # explain, errors


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
        typer.Option(
            help="follow symlinks out of walked folders, and read manifest paths outside the "
            "manifest's folder and the folders named"
        ),
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
    small: Annotated[
        bool, typer.Option(help="fewer, shorter media: the same pipeline in less time (CI)")
    ] = False,
) -> None:
    """Generate a small corpus, ingest it, run every stage, print a summary and what to try next."""
    from sila.demo.run import run_demo

    out = run_demo(
        lake or "./demo/lake",  # never $SILA_LAKE: the demo writes only into its own folder
        media_dir=media,
        quiet=as_json,
        small=small,
    )
    if as_json:
        emit_json(out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
