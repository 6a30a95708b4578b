"""`sila view`: the Streamlit viewer over a lake, bound to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import sila.viewer as viewer_pkg
import typer
from sila.cli.output import console, fail, handle_errors

from sila.lake import Lake, default_lake_uri

APP = Path(viewer_pkg.__file__).with_name("app.py")  # ships in the wheel as sila/viewer/app.py


def streamlit_argv(app: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--server.runOnSave", "false", "--global.developmentMode", "false",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip


@handle_errors
def view(
    lake: Annotated[
        str,
        typer.Option(
            "--lake", "-l", help="lake directory or URI (default $SILA_LAKE, else ./lake)"
        ),
    ] = "",
    port: Annotated[int, typer.Option(help="port to serve on")] = 8501,
    host: Annotated[
        str, typer.Option(help="address to bind; 0.0.0.0 exposes the lake to your network")
    ] = "127.0.0.1",
    recipe: Annotated[
        str | None,
        typer.Option(help="recipe whose \\[buckets] section the Distributions page draws"),
    ] = None,
    storage_option: Annotated[
        list[str] | None, typer.Option("--storage-option", help="KEY=VALUE for object stores")
    ] = None,
) -> None:
    """Browse the lake in a browser: coverage, samples (clips play), search, duplicates, plots."""
    opts = {}
    for item in storage_option or []:
        k, sep, v = item.partition("=")
        if not sep:
            fail(f"--storage-option expects KEY=VALUE, got {item!r}")
        opts[k] = v
    lk = Lake(lake or default_lake_uri(), storage_options=opts)
    if not lk.tables():
        console.print(
            f"[yellow]lake {lk.uri} has no tables yet[/]: the viewer will say what to run "
            f"(`sila ingest PATH --lake {lk.uri}`)"
        )
    env = dict(os.environ)
    env["SILA_VIEW_LAKE"] = lk.uri
    if opts:
        env["SILA_VIEW_STORAGE_OPTIONS"] = json.dumps(opts)
    if recipe:
        env["SILA_VIEW_RECIPE"] = recipe
    env.setdefault("LANCE_LOG", "error")
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            f"[yellow]binding {host}[/]: anyone who can reach this machine on port {port} can "
            "browse the lake (the viewer has no login)"
        )
    console.print(f"SILA viewer on http://{host}:{port} for {lk.uri} (read-only; Ctrl-C stops)")
    sys.stdout.flush()
    argv = streamlit_argv(APP, host, port)
    os.execve(argv[0], argv, env)  # the server is this process: a kill stops it, nothing lingers
