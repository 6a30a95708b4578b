"""`sila errors [--stage S]`: the lake's row errors, errors first. Grouped by stage and message
class (the message with its paths, ids and numbers taken out), with counts, example rows (the
user's file for each) and the fix as `sila doctor` names it.
"""

from __future__ import annotations

import re
from typing import Any

from sila.errors import SilaError
from sila.schema import owner

ERRORS_SCHEMA = "sila.errors/1"  # docs/first-hour-json.md; bump when a key changes meaning
_PATH = re.compile(r"('[^']*/[^']*'|\S*/\S+)")  # a quoted path first: it may hold spaces
_HEX = re.compile(r"\b[0-9a-f]{8,}\b")
_NUM = re.compile(r"\b\d+(\.\d+)?\b")


def message_class(message: str) -> str:
    """What an error message says, without what differs per row: the first line with paths,
    ids and numbers replaced, cut at its first ": " (the detail after it names the row)."""
    head = (message or "").strip().splitlines()[0] if (message or "").strip() else "(empty)"
    head = _NUM.sub("N", _HEX.sub("ID", _PATH.sub("PATH", head)))
    cls = head.split(": ", 1)[0].strip()
    return cls[:120] or "(empty)"


def error_columns(lake, stage: str | None = None) -> list[tuple[str, str]]:
    """(table, stage) of every `<stage>_error` column the stage owns (ingest's included)."""
    out = []
    for table in lake.tables():
        for f in lake.table(table).schema:
            name = f.name.removesuffix("_error")
            if f.name.endswith("_error") and owner(f) == name and stage in (None, name):
                out.append((table, name))
    return out


def row_errors(lake, stage: str | None = None, examples: int = 3) -> dict[str, Any]:
    """Every stage's row errors by message class (schema `sila.errors/1`), with the fix."""
    cols = error_columns(lake, stage)
    if stage and not cols:
        raise SilaError(f"no stage named '{stage}' has run on this lake (see `sila status`)")
    groups = []
    for table, st in cols:
        groups += _classes(lake, table, st, examples)
    if groups:
        fixes = _doctor_fixes(lake)
        for g in groups:
            g["fix"], g["doctor"] = fixes.get((g["table"], g["stage"]), (None, None))
    return {
        "schema": ERRORS_SCHEMA,
        "lake": lake.uri,
        "rows": sum(g["count"] for g in groups),
        "groups": groups,
    }


def _classes(lake, table: str, stage: str, examples: int) -> list[dict[str, Any]]:
    ds = lake.table(table)
    err = f"{stage}_error"
    names = set(ds.schema.names)
    cols = ["id", err, *(c for c in ("uri", "source_id") if c in names)]
    t = ds.to_table(columns=cols, filter=f"{err} IS NOT NULL")
    if not t.num_rows:
        return []
    rows = t.to_pylist()
    uris = _source_uris(lake, {r["source_id"] for r in rows if r.get("source_id")})
    by: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: str(r.get("uri") or r["id"])):
        cls = message_class(r[err])
        g = by.setdefault(
            cls, {"table": table, "stage": stage, "class": cls, "count": 0, "examples": []}
        )
        g["count"] += 1
        if len(g["examples"]) < examples:
            uri = r.get("uri") or uris.get(r.get("source_id"))
            g["examples"].append({"id": r["id"], "uri": uri, "error": r[err]})
    return sorted(by.values(), key=lambda g: -g["count"])


def _source_uris(lake, ids: set[str]) -> dict[str, str]:
    """The user's file of each source id (a clip's error names the file it came from)."""
    if not ids or "sources" not in lake.tables():
        return {}
    quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in sorted(ids))
    t = lake.table("sources").to_table(columns=["id", "uri"], filter=f"id IN ({quoted})")
    return dict(zip(t.column("id").to_pylist(), t.column("uri").to_pylist(), strict=True))


def _doctor_fixes(lake) -> dict[tuple[str, str], tuple[str | None, str]]:
    """Per (table, stage): the fix command `sila doctor` gives for its row errors (None where
    no command fixes them) and its message."""
    from sila.coordinator.ops.doctor import diagnose

    out = {}
    for f in diagnose(lake)["findings"]:
        if f["kind"] in ("row_errors", "ingest_failed"):
            out[(f["table"], f["stage"])] = (f["fix"], f["message"])
    return out


def error_lines(report: dict[str, Any]) -> list[str]:
    """`sila errors` for people: one block per stage and message class (80 columns)."""
    if not report["groups"]:
        return ["no row errors"]
    out = [f"{report['rows']} row error(s):"]
    for g in report["groups"]:
        out += ["", f"{g['stage']} ({g['table']}): {g['count']} x {g['class']}"]
        for e in g["examples"]:
            out.append(f"  {e['uri'] or e['id']}")
            out.append(f"    {e['error'].splitlines()[0][:200]}")
        if g["count"] > len(g["examples"]):
            more = g["count"] - len(g["examples"])
            out.append(
                f'  ... {more} more: sila sql "select id, {g["stage"]}_error from {g["table"]}'
            )
            out.append(f'      where {g["stage"]}_error is not null"')
        if g["stage"] == "ingest":
            out.append("  repair or replace the file and ingest it again; the failed rows go with")
        if g["fix"]:
            out.append(f"  fix: {g['fix']}")
        elif g["doctor"]:
            out.append("  no retry helps: the stage's answer for this input; repair or remove it")
    return out
