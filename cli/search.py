"""`sila search`, `sila index build|status|refresh`, `sila dedup report`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from sila.cli.output import JsonOpt, LakeOpt, console, emit_json, handle_errors

from sila.lake import Lake, default_lake_uri

TableOpt = Annotated[str, typer.Option(help="table holding the vectors")]
ColumnOpt = Annotated[str, typer.Option(help="vector column")]

index_app = typer.Typer(
    help="The vector index on a table's embeddings (LanceDB, cosine).", no_args_is_help=True
)
dedup_app = typer.Typer(help="Reports of the dedup stage's fit.", no_args_is_help=True)


def _lake(uri: str) -> Lake:
    return Lake(uri or default_lake_uri())


def search_cmd(
    text: Annotated[str | None, typer.Argument(help="text to search for (CLIP text tower)")] = None,
    like: Annotated[str | None, typer.Option(help="clips like this clip id")] = None,
    image: Annotated[str | None, typer.Option(help="clips like this image file")] = None,
    k: Annotated[int, typer.Option(help="number of results")] = 10,
    where: Annotated[str | None, typer.Option(help='SQL prefilter, e.g. "dedup_keep"')] = None,
    columns: Annotated[str | None, typer.Option(help="extra columns, comma-separated")] = None,
    table: TableOpt = "clips",
    column: ColumnOpt = "embedding",
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Semantic search over the clips: `sila search "a forklift"`, `--like ID`, `--image FILE`."""
    lk = _lake(lake)
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    res = lk.search(
        text, like=like, image=image, k=k, where=where, columns=cols, table=table, column=column
    )
    if as_json:
        emit_json(res.to_dict())
        return
    mode = "exact (no index used)" if res.exact else f"index {res.index}"
    console.print(f"[bold]{len(res.results)}[/] result(s), {mode}, model {res.model}")
    if res.random_weights:
        console.print(
            "[bold red]RANDOM WEIGHTS[/]: the embeddings come from an untrained model; scores mean nothing"
        )
    for n in res.notes:
        console.print(f"  [yellow]note[/] {n}")
    if not res.results:
        return
    keys = [c for c in res.results[0] if c != "score"]
    t = Table("score", *keys)
    for r in res.results:
        t.add_row(
            f"{r['score']:.4f}" if r["score"] is not None else "-", *[_short(r[c]) for c in keys]
        )
    console.print(t)


def _short(v) -> str:
    s = json.dumps(v, default=str) if isinstance(v, list | dict) else str(v)
    return s if len(s) < 60 else s[:57] + "..."


@index_app.command("build")
@handle_errors
def index_build(
    table: TableOpt = "clips",
    column: ColumnOpt = "embedding",
    index_type: Annotated[
        str | None, typer.Option(help="override: IVF_PQ, IVF_HNSW_SQ, IVF_RQ, ...")
    ] = None,
    num_partitions: Annotated[int | None, typer.Option(help="override the partition count")] = None,
    num_sub_vectors: Annotated[int | None, typer.Option(help="override PQ sub-vectors")] = None,
    nprobes: Annotated[int | None, typer.Option(help="fix nprobes (skips tuning)")] = None,
    refine_factor: Annotated[
        int | None, typer.Option(help="fix the refine factor (skips tuning)")
    ] = None,
    sample: Annotated[int, typer.Option(help="queries for the recall@10 measurement")] = 100,
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Train the index (type and parameters chosen from width and rows), measure recall@10."""
    from dataclasses import asdict

    from sila.retrieval.maintain import build_index

    rec = build_index(
        _lake(lake), table, column, sample=sample, index_type=index_type, num_partitions=num_partitions,
        num_sub_vectors=num_sub_vectors, nprobes=nprobes, refine_factor=refine_factor,
    )  # fmt: skip
    if as_json:
        emit_json({"ok": True, **asdict(rec)})
        return
    if not rec.name:
        console.print(f"{table}.{column}: too few rows to train an index: search is exact")
        return
    p = rec.plan
    console.print(
        f"built {p.index_type} on {table}.{column}: {rec.rows_indexed} rows, {p.num_partitions} partitions, "
        f"{rec.build_s} s, {rec.size_bytes / 2**20:.1f} MiB; recall@10 vs exact = {rec.recall_at_10} "
        f"(nprobes {p.nprobes}, refine {p.refine_factor}, ef {p.ef}; {rec.recall_sample} sample queries)"
    )


@index_app.command("status")
@handle_errors
def index_status_cmd(
    table: TableOpt = "clips",
    column: ColumnOpt = "embedding",
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Index kind, rows indexed / not yet indexed, recall, staleness, random weights."""
    from sila.retrieval.maintain import index_status

    st = index_status(_lake(lake), table, column)
    if as_json:
        emit_json(st)
        return
    console.print(
        f"{table}.{column}: {st['rows_with_vectors']} rows with vectors, model {st.get('model')}"
    )
    if st.get("random_weights"):
        console.print("  [bold red]RANDOM WEIGHTS[/]: vectors from an untrained model")
    if st.get("index"):
        console.print(
            f"  index {st['index']} ({st['plan']['index_type']}), recall@10 {st['recall_at_10']}, unindexed rows {st['unindexed_rows']}"
        )
    if st.get("stale"):
        console.print(f"  [red]STALE[/]: {st['stale']}: `sila index build`")
    if st.get("note"):
        console.print(f"  {st['note']}")


@index_app.command("refresh")
@handle_errors
def index_refresh(
    table: TableOpt = "clips",
    column: ColumnOpt = "embedding",
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Add new rows to the index (index-only maintenance; never compacts the table)."""
    from sila.retrieval.maintain import refresh_index

    out = refresh_index(_lake(lake), table, column)
    emit_json(out) if as_json else console.print(
        f"refreshed: {out['refreshed']}; unindexed rows now {out.get('unindexed_rows')}"
        + (f" ({out['reason']})" if out.get("reason") else "")
    )


@dedup_app.command("report")
@handle_errors
def dedup_report(
    stage: Annotated[str, typer.Option(help="dedup or fpdedup")] = "dedup",
    table: TableOpt = "clips",
    lake: LakeOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """The current fit: clusters, kept/removed, and the eps sweep (kept/removed per eps)."""
    from sila.errors import SilaError
    from sila.global_stage import FitStore

    fit = FitStore(_lake(lake), table, stage).current()
    if fit is None:
        raise SilaError(f"no fit for '{stage}' on '{table}' yet: `sila run {stage}`")
    out = {"fit_id": fit.fit_id, **fit.summary}
    if as_json:
        emit_json(out)
        return
    s = fit.summary
    console.print(
        f"fit {fit.fit_id}: {s['rows']} rows, {s['clusters']} clusters (k-means on {s['sample_rows']}), eps {s['eps']}: kept {s['kept']}, removed {s['removed']}"
    )
    cen = s.get("centroids") or {}
    if cen:  # the only way this fit can differ from a fit from scratch on the same rows
        since = s["rows"] - int(cen.get("rows", s["rows"]))
        tail = (
            f"; {since:+d} rows since, grouped against them (a fit from scratch retrains the "
            "centroids: groups differ only where near-copies straddle two clusters; "
            f"`sila run {stage} --recompute` refits)"
        )
        trained = f"centroids trained on {cen.get('sample_rows')} of {cen.get('rows')} rows"
        console.print(trained + (tail if since else ""))
    if "arrived" in s:
        console.print(
            f"last update: {s['arrived']} rows arrived, {s.get('left', 0)} left, "
            f"{s['regrouped_clusters']} clusters regrouped, {s['changed_rows']} stored answers "
            "changed" + (" (every fragment looked up again)" if s["changed_rows"] else "")
        )
    t = Table("eps", "kept", "removed", "removed %")
    for r in s.get("sweep", []):
        t.add_row(
            str(r["eps"]), str(r["kept"]), str(r["removed"]), f"{100 * r['removed_fraction']:.1f}"
        )
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("search")(handle_errors(search_cmd))
    app.add_typer(index_app, name="index")
    app.add_typer(dedup_app, name="dedup")
