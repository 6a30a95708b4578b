"""Training data out: `sila export wds`, `sila devtable`, `sila snapshot`, `sila card`."""

from __future__ import annotations

import json
import re
from pathlib import Path
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

from sila.errors import SilaError

export_app = typer.Typer(help="Export training data (WebDataset shards).", no_args_is_help=True)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?i?b?)?\s*", text.lower())
    if not m:
        raise SilaError(f"cannot read size {text!r}: write e.g. 1GB, 500MB, 2000000")
    unit = (m.group(2) or "").rstrip("b").rstrip("i")
    return int(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[unit])


def _lake(lake: str, storage):
    return open_lake(lake, storage)


@export_app.command("wds")
@handle_errors
def export_wds(
    out: Annotated[str, typer.Argument(help="output folder or s3://bucket/prefix")],
    lake: LakeOpt = "",
    where: Annotated[str | None, typer.Option(help="SQL over clips, added to the default")] = None,
    all_rows: Annotated[
        bool, typer.Option("--all", help="no default selection (filters, dedup, captions)")
    ] = False,
    target_size: Annotated[str, typer.Option(help="shard size target, e.g. 1GB")] = "1GB",
    recipe: Annotated[str | None, typer.Option(help="recipe with [buckets]")] = None,
    mixture: Annotated[str | None, typer.Option(help="recipe with a [mixture]")] = None,
    label: Annotated[str | None, typer.Option(help="label column for the leakage audit")] = None,
    allow_pending: Annotated[
        bool,
        typer.Option(
            "--allow-pending",
            help="export only the curated rows when stages the selection reads are not computed "
            "on every row (recorded in the manifest); without it such an export is refused",
        ),
    ] = False,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """Selected clips as WebDataset shards per bucket, with a manifest and Energon's .nv-meta.
    An interrupted export resumes where it stopped; the same inputs give the same bytes. Refused
    while a stage the selection reads (a filter, dedup, captions, the split) has rows to compute."""
    from sila.export.wds import ExportOptions

    lk = _lake(lake, storage_option)
    opts = ExportOptions(
        out=out,
        where=where,
        recipe=recipe,
        target_bytes=parse_size(target_size),
        default_selection=not all_rows,
        allow_pending=allow_pending,
    )

    def progress(name, rec):
        if not as_json:
            console.print(f"  wrote {name}: {rec['count']} samples, {rec['bytes'] / 1e6:.1f} MB")

    res = lk.export(out, mixture=mixture, label=label, progress=progress, options=opts)
    if as_json:
        emit_json({"ok": True, **res})
        return
    if "subsets" in res:
        for s in res["subsets"]:
            console.print(f"{s['subset']}: {s['samples']} samples (weight {s['weight']})")
        return
    console.print(
        f"exported {res['samples']} samples, {res['bytes'] / 1e6:.1f} MB in {len(res['shards'])} "
        f"shard(s) to {out} (selection: {res['selection'] or 'all rows'})"
    )
    for b, v in res["buckets"].items():
        console.print(f"  {b}: {v['samples']} samples in {len(v['shards'])} shard(s)")
    for w in res.get("warnings", []):
        console.print(f"  [bold red]warning[/]: {w}")
    if res.get("audit"):
        a = res["audit"]
        console.print(
            f"  leakage audit: {a['groups_in_two_splits']} groups in two splits, "
            f"{a['near_duplicate_pairs_across_splits']} near-duplicate pairs across splits"
        )


def devtable(
    from_: Annotated[str, typer.Option("--from", help="the big lake")],
    to: Annotated[str, typer.Option(help="the new small lake")],
    rows: Annotated[int, typer.Option(help="clips to sample")] = 1000,
    stratify_by: Annotated[str | None, typer.Option(help="keep this column's proportions")] = None,
    table: Annotated[str, typer.Option(help="table to sample")] = "clips",
    seed: int = 0,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """A small lake with the same schemas and a stratified sample (clips bring their sources)."""
    src = _lake(from_, storage_option)
    res = src.devtable(to, rows, stratify_by=stratify_by, table=table, seed=seed)
    emit_json({"ok": True, **res}) if as_json else console.print(res)


def snapshot(
    out: Annotated[str, typer.Argument(help="output folder")],
    lake: LakeOpt = "",
    fmt: Annotated[str, typer.Option("--format", help="parquet")] = "parquet",
    table: Annotated[list[str] | None, typer.Option(help="tables (default: all)")] = None,
    columns: Annotated[str | None, typer.Option(help="comma-separated columns")] = None,
    where: Annotated[str | None, typer.Option(help="SQL filter")] = None,
    blobs: Annotated[bool, typer.Option(help="include media blob columns")] = False,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """Parquet projections of the lake's tables for Spark, Databricks or any engine."""
    from sila.export.snapshot import snapshot as do

    cols = [c.strip() for c in columns.split(",")] if columns else None
    res = do(
        _lake(lake, storage_option),
        out,
        tables=table,
        columns=cols,
        where=where,
        blobs=blobs,
        fmt=fmt,
    )
    if as_json:
        emit_json({"ok": True, "tables": res})
    else:
        for name, v in res.items():
            console.print(f"{name}: {v['rows']} rows -> {v['path']}")


def card(
    out: Annotated[str, typer.Argument(help="output folder")],
    lake: LakeOpt = "",
    recipe: Annotated[str | None, typer.Option(help="recipe with [buckets]")] = None,
    label: Annotated[str | None, typer.Option(help="label column for split coverage")] = None,
    mixture: Annotated[str | None, typer.Option(help="an export's mixture.json")] = None,
    as_json: JsonOpt = False,
    storage_option: StorageOpt = None,
) -> None:
    """A dataset card: Markdown + PNG plots + Croissant JSON-LD."""
    mix = json.loads(Path(mixture).read_text()) if mixture else None
    res = _lake(lake, storage_option).card(out, recipe=recipe, label=label, mixture=mix)
    if as_json:
        emit_json({"ok": True, **res})
    else:
        console.print(
            f"card written to {out}/README.md (croissant valid: {res['croissant_valid']})"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
    for fn in (devtable, snapshot, card):
        app.command(fn.__name__)(handle_errors(fn))
