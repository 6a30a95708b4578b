"""`sila ingest`: run it and say what happened to every input (people) or print one JSON object
(scripts: stdout is valid JSON whatever goes wrong)."""

from __future__ import annotations

import logging
import re
import time

import typer
from sila.cli.output import console, emit_json, err_console, fail

from sila.errors import SilaError
from sila.lake import Lake

log = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}  # fmt: skip
SHOW = 20  # lines per kind in the human report


def parse_bytes(text: str) -> int:
    """'2GiB' -> 2147483648; '500MB' -> 500000000; '1024' -> 1024."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise SilaError(f"--bytes-per-fragment expects a size like 2GiB or 512MiB, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def ingest_command(
    lake: Lake,
    paths: list[str],
    *,
    reference: bool,
    rows_per_fragment: int,
    bytes_per_fragment: str,
    allow_outside: bool,
    as_json: bool,
) -> None:
    if rows_per_fragment < 1:
        fail("--rows-per-fragment must be at least 1", as_json)
    t0 = time.monotonic()
    try:
        rep = lake.ingest(
            paths,
            reference=reference,
            rows_per_fragment=rows_per_fragment,
            bytes_per_fragment=parse_bytes(bytes_per_fragment),
            allow_outside=allow_outside,
        )
    except (SilaError, OSError, typer.Exit):
        raise  # handle_errors words these
    except Exception as e:  # noqa: BLE001 - a bug still must not leave --json stdout empty
        if not as_json:
            raise
        log.exception("ingest failed")
        fail(f"ingest failed ({type(e).__name__}): {e}", as_json)
    out = {"ok": True, **rep.to_dict(), "seconds": round(time.monotonic() - t0, 2)}
    nothing = _nothing_ingested(rep)
    if nothing:  # a script must not take "no row came of it" for success
        out = {"ok": False, "error": nothing, **{k: v for k, v in out.items() if k != "ok"}}
    if as_json:
        emit_json(out)
    else:
        _human(rep, out["seconds"])
        if nothing:
            err_console.print(f"[bold red]error:[/] {nothing}", highlight=False)
    if nothing:
        raise typer.Exit(1)


def _nothing_ingested(rep) -> str | None:
    """Why no input became (or already was) a row of `sources`; None when some did."""
    if rep.added or rep.present:
        return None
    why = [
        f"{n} {label}"
        for n, label in (
            (rep.failed, "failed"),
            (len(rep.missing), "missing"),
            (rep.skipped_outside, "outside the allowed folders"),
            (rep.skipped_hidden, "hidden"),
        )
        if n
    ]
    return "nothing was ingested: " + (", ".join(why) if why else "no files found")


def _human(rep, seconds: float) -> None:
    console.print(
        f"added [bold]{rep.added}[/] in {rep.fragments} fragment(s), already present "
        f"{rep.present} ({rep.meta_filled} given manifest fields), failed {rep.failed}, missing {len(rep.missing)}, skipped hidden "
        f"{rep.skipped_hidden}, skipped outside {rep.skipped_outside} ({seconds} s)",
        highlight=False,
        soft_wrap=True,
    )
    _some("[red]failed[/]", [f"{_name(f)}: {f['error']}" for f in rep.failures])
    _some("[yellow]no such file[/]", rep.missing)
    outside = [f"{s['path']}: {s['detail']}" for s in rep.skipped if s["reason"] == "outside"]
    _some("[yellow]refused[/]", outside)
    hidden = [f"{s['path']} ({s['detail']})" for s in rep.skipped if s["reason"] == "hidden"]
    _some("[dim]hidden, skipped[/]", hidden)
    _some("[yellow]warning[/]", [w["error"] for w in rep.warnings])


def _name(f: dict) -> str:
    return f"{f['path']} (source {f['id']})" if f.get("id") else f["path"]


def _some(label: str, lines: list[str]) -> None:
    for line in lines[:SHOW]:
        console.print(f"  {label} ", end="")
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if len(lines) > SHOW:
        console.print(f"  ... and {len(lines) - SHOW} more (see --json)")
