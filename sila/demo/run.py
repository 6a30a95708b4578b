"""`sila demo`: generate a small realistic corpus, ingest it, run the pipeline, show the result.

The demo writes only into its own folder: the lake it is given (never `$SILA_LAKE`, a user's
lake) and its media beside that lake, in the same demo folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sila.lake import Lake
from sila.recipe import load_recipe
from sila.registry import registered


def run_demo(
    lake_uri: str, *, media_dir: str | None = None, quiet: bool = False, small: bool = False
) -> dict:
    from sila.demo.corpus import make_corpus

    console = Console(quiet=quiet)
    t0 = time.monotonic()
    lake = Lake(lake_uri).init()
    media_dir = media_dir or demo_media_dir(lake.uri)
    console.print(f"[bold]1/3[/] generating media in {media_dir} ...")
    files = make_corpus(media_dir, small=small)
    from sila.demo.episodes import generic_dataset, lerobot_v3

    episodes = [
        str(generic_dataset(Path(media_dir) / "episodes" / "egocentric", episodes=2)),
        str(lerobot_v3(Path(media_dir) / "episodes" / "lerobot_v3", episodes=2)),
    ]
    console.print(
        f"[bold]2/3[/] ingesting {len(files)} files and {len(episodes)} episode datasets "
        f"into {lake.uri} ..."
    )
    rep = lake.ingest([*files, *episodes])
    console.print(f"    added {rep.added}, already present {rep.present}, failed {rep.failed}")
    for f in rep.failures:
        console.print(
            f"    [yellow]expected failure[/] {os.path.basename(f['path'])}: {f['error']}"
        )
    recipe, recipe_name = load_recipe("demo"), "demo"  # shipped as package data
    available = registered()
    names = [s for s in recipe.get("pipeline", {}).get("stages", []) if s in available]
    random_ok = list(recipe.get("demo", {}).get("allow_random_weights", []))
    console.print(f"[bold]3/3[/] sila pipeline run: {', '.join(names)}")

    def event(kind: str, stage: str, out=None) -> None:
        if kind == "end":
            console.print(
                f"    {stage}: {out.rows} rows, {out.row_errors} row errors, {out.seconds} s"
            )
        elif kind in ("skip", "fail"):
            console.print(
                f"    {stage}: {kind}ped: {out.message}"
                if kind == "skip"
                else f"    [red]{stage} failed[/]: {out.message}"
            )

    res = (
        lake.pipeline(
            recipe_name or "demo",
            only=names,
            on_event=event,
            random_weights=random_ok,
            progress=False,
        )
        if recipe_name
        else None
    )
    jobs = {s["stage"]: s for s in (res or {}).get("stages", [])}
    if res is None:  # no recipe file: the built-in minimal pipeline, one stage after the other
        for name in names:
            jobs[name] = lake.run(name)["progress"]
    for name in random_ok:
        if name in jobs and _random_weights(lake, name):
            jobs[name]["random_weights"] = True
            console.print(
                f"    [bold red]{name} ran with RANDOM weights[/]: no CLIP weights on this machine "
                "(set SILA_CLIP_WEIGHTS=/path or pre-download them); its vectors and tags test "
                "the mechanics only"
            )
    status = lake.status()
    tab = Table("table", "rows", "fragments", "stage: done/pending fragments, row errors")
    for tname, t in status["tables"].items():
        stages = "; ".join(
            f"{s}: {d['fragments_done']}/{d['fragments_pending']}, {d['errors']} err"
            for s, d in t["stages"].items()
        )
        tab.add_row(tname, str(t["rows"]), str(t["fragments"]), stages)
    console.print(tab)
    seconds = round(time.monotonic() - t0, 1)
    console.print(f"demo finished in {seconds} s. Try next:")
    for cmd in (
        f"sila status --lake {lake.uri}",
        f'sila sql "select filename, media_kind, duration_s, ingest_error from sources" --lake {lake.uri}',
        f'sila sql "select id, start_s, end_s, video_width, video_height, crop_box from clips" --lake {lake.uri}',
        f"sila run thumbnail --recipe demo --lake {lake.uri}   # nothing to do: every row has its outputs",
        "sila stages",
        f'sila search "a colourful fractal" --lake {lake.uri}   # says when the weights are random',
        f"sila dedup report --lake {lake.uri}",
        f"sila pipeline run demo --allow-random-weights --lake {lake.uri}   # does only what is missing",
        f"sila doctor --lake {lake.uri}",
        f"sila export wds ./demo/shards --lake {lake.uri}",
        f"sila card ./demo/card --lake {lake.uri}",
    ):
        console.print(f"  {cmd}")
    return {
        "lake": lake.uri,
        "media": media_dir,
        "ingest": rep.to_dict(),
        "jobs": jobs,
        "status": status,
        "seconds": seconds,
    }


def demo_media_dir(lake_uri: str) -> str:
    """Where the demo's media go: `media/` beside a local demo lake (`demo/lake` -> `demo/media`);
    for a lake in an object store, a local `./demo/media` (media are generated on this machine)."""
    if "://" in lake_uri and not lake_uri.startswith("file://"):
        return os.path.join(".", "demo", "media")
    return os.path.join(
        os.path.dirname(lake_uri.removeprefix("file://").rstrip("/")) or ".", "media"
    )


def _random_weights(lake: Lake, stage: str) -> bool:
    for tbl in lake.tables():
        for f in lake.table(tbl).schema:
            meta = f.metadata or {}
            if meta.get(b"sila.stage") == stage.encode():
                return meta.get(b"sila.random_weights") == b"true"
    return False
