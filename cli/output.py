"""Human and machine output for the CLI: rich tables for people, `--json` for scripts."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from sila.errors import SilaError
from sila.lake import Lake, default_lake_uri

# The options every command shares (one definition: the help text reads the same everywhere).
LakeOpt = Annotated[
    str,
    typer.Option("--lake", "-l", help="lake directory or URI (default $SILA_LAKE, else ./lake)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
StorageOpt = Annotated[
    list[str] | None, typer.Option("--storage-option", help="KEY=VALUE for object stores")
]

console = Console(stderr=False)
err_console = Console(stderr=True)


def emit_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, as_json: bool = False, code: int = 1) -> None:
    if as_json:
        emit_json({"ok": False, "error": message})
    else:
        err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def open_lake(uri: str | None, storage: list[str] | None = None) -> Lake:
    """The lake a command names (`--lake`, else $SILA_LAKE, else ./lake) with its
    `--storage-option KEY=VALUE` pairs."""
    opts = {}
    for item in storage or []:
        k, sep, v = item.partition("=")
        if not sep:
            fail(f"--storage-option expects KEY=VALUE, got {item!r}")
        opts[k] = v
    return Lake(uri or default_lake_uri(), storage_options=opts)


def obstore_errors() -> type[BaseException]:
    try:
        from obstore.exceptions import BaseError

        return BaseError
    except ImportError:  # pragma: no cover
        return OSError


def handle_errors(fn: Callable) -> Callable:
    """SilaErrors become a clean message and exit code 1; anything else keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json"))
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            return fn(*args, **kwargs)
        except SilaError as e:
            fail(str(e), as_json)
        except (
            OSError,
            obstore_errors(),
        ) as e:  # storage unreachable, denied, ...: a message, not a trace
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            fail(
                f"storage error ({type(e).__name__}): {first[:500]}; check the lake URI, the endpoint and "
                "credentials (AWS_* variables or --storage-option)",
                as_json,
            )
        except KeyboardInterrupt:
            fail("interrupted; run the same command again to resume where it stopped", as_json, 130)

    return wrapper
