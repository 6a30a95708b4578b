"""`sila explain ID`: why a row is what it is. Every column grouped by the stage that wrote it,
with the stage's version, settings and model (real or random weights, from its column facts),
the job that wrote the row's fragment and when, its decision with the threshold each reason
crossed and by how much, and the upstream columns it was computed from (its declared reads).

Everything comes from metadata the platform already keeps: field metadata (owner, version,
facts), the per-fragment records (`_sila/state`: which job wrote which data file) and the job
records (settings); the only data read is the row itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sila.coordinator.discovery import as_run_binds, stage_class_of
from sila.coordinator.ops.jobs import JobLog
from sila.coordinator.state import StageRecords, file_stem, where_columns

from sila.errors import SilaError
from sila.filters import Filter
from sila.schema import MODEL_KEY, SPEC_KEY, STAGE_KEY, VERSION_KEY, is_blob, owner

EXPLAIN_SCHEMA = "sila.explain/1"  # docs/first-hour-json.md; bump when a key changes meaning
_ID = re.compile(r"^[A-Za-z0-9_.:/-]{4,300}$")
_PLAIN_KEYS = {STAGE_KEY, VERSION_KEY, SPEC_KEY, MODEL_KEY}


def find_row(lake, row_id: str) -> tuple[str, dict[str, Any], int]:
    """(table, row without blobs, fragment id) of the row whose id is `row_id` or starts with
    it (a prefix must name one row)."""
    if not _ID.match(row_id):
        raise SilaError(f"{row_id!r} is not a row id (ids are hex, e.g. from `sila sql`)")
    hits: list[tuple[str, dict, int]] = []
    for name in lake.tables():
        ds = lake.table(name)
        if "id" not in ds.schema.names:
            continue
        cols = [f.name for f in ds.schema if not is_blob(f)]
        for pred in (f"id = '{row_id}'", f"id LIKE '{row_id}%'"):
            t = ds.to_table(columns=cols, filter=pred, with_row_address=True, limit=5)
            if t.num_rows:
                for r in t.to_pylist():
                    hits.append((name, r, int(r.pop("_rowaddr")) >> 32))
                break
    exact = [h for h in hits if h[1]["id"] == row_id]
    if exact:
        return exact[0]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise SilaError(f"no row with id {row_id!r} in {', '.join(lake.tables()) or 'this lake'}")
    ids = ", ".join(f"{t}/{r['id']}" for t, r, _ in hits)
    raise SilaError(f"{row_id!r} names several rows ({ids}); give more of the id")


def explain(lake, row_id: str) -> dict[str, Any]:
    """The answer of `sila explain ID --json` (schema `sila.explain/1`)."""
    table, row, frag_id = find_row(lake, row_id)
    ds = lake.table(table)
    jobs = _JobCache(lake)
    groups: dict[str, list] = {}
    for f in ds.schema:
        groups.setdefault(owner(f) or "ingest", []).append(f)
    stages = [
        _stage_entry(lake, ds, table, stage, fields, row, frag_id, jobs)
        for stage, fields in groups.items()
    ]
    decisions = {s["stage"]: s["decision"] for s in stages if "decision" in s}
    rejected_by = [s for s, d in decisions.items() if d["keep"] is False]
    pending = [s for s, d in decisions.items() if d["keep"] is None]
    verdict = "rejected" if rejected_by else "undetermined" if pending else "kept"
    out: dict[str, Any] = {
        "schema": EXPLAIN_SCHEMA,
        "id": row["id"],
        "table": table,
        "fragment": frag_id,
        "verdict": verdict if decisions else "no decision yet",
        "rejected_by": rejected_by,
        "stages": stages,
    }
    if table != "sources" and row.get("source_id"):
        out["parent"] = {"table": "sources", "id": row["source_id"]}
    return out


class _JobCache:
    """Job records read once each (`_sila/jobs/<job>.json`)."""

    def __init__(self, lake) -> None:
        self.store, self.seen = lake.store, {}
        self.all: list[dict] | None = None

    def latest(self, stage: str, identity: str | None) -> dict[str, Any]:
        """The latest job of `stage` that wrote rows, under the columns' identity where one
        did: who wrote a row no fragment record names (a fragment computed under the identity
        its columns carry needs no record; an explode stage's children; a global stage)."""
        if self.all is None:
            self.all = JobLog(self.store).all()
        wrote = [
            j
            for j in self.all
            if j.get("stage") == stage
            and ((j.get("progress") or {}).get("rows") or (j.get("progress") or {}).get("children"))
        ]
        same = [j for j in wrote if identity and j.get("identity") == identity]
        if not (same or wrote):
            return {}
        j = (same or wrote)[-1]
        self.seen.setdefault(j["job"], j)
        return {"job": j["job"], "written_at": j.get("ended_at"), "from": "job log"}

    def get(self, job: str) -> dict:
        if job not in self.seen:
            raw = self.store.get(f"jobs/{job}.json")
            self.seen[job] = json.loads(raw) if raw else {}
        return self.seen[job]


def _stage_entry(lake, ds, table, stage, fields, row, frag_id, jobs) -> dict[str, Any]:
    meta = dict(fields[0].metadata or {}) if stage != "ingest" else {}
    facts = {k.decode(): v.decode() for k, v in meta.items() if k not in _PLAIN_KEYS}
    entry: dict[str, Any] = {
        "stage": stage,
        "version": meta.get(VERSION_KEY, b"").decode() or None,
        "model": meta.get(MODEL_KEY, b"").decode() or None,
        "random_weights": facts.get("sila.random_weights") == "true",
        "facts": facts,
        "columns": {f.name: ("<blob>" if is_blob(f) else short(row.get(f.name))) for f in fields},
    }
    if stage == "ingest":
        return entry
    entry["error"] = row.get(f"{stage}_error")
    written = _writer(lake, ds, table, stage, fields, frag_id) or jobs.latest(
        stage, facts.get("sila.identity")
    )
    job = jobs.get(written["job"]) if written.get("job") else {}
    entry["job_from"] = written.get("from")
    entry["job"] = written.get("job")
    entry["written_at"] = written.get("written_at")
    entry["settings"] = job.get("settings") or {}
    cls = stage_class_of(ds, stage)
    instance = as_run_binds(ds, cls, entry["settings"])
    entry["reads"] = _reads(lake, ds, instance)
    defaults = cls.settings  # a stand-in for lost code has none
    entry["changed_settings"] = {
        k: v
        for k, v in entry["settings"].items()
        if k in defaults and v not in (defaults[k], str(defaults[k]))
    }
    if f"{stage}_keep" in row:
        entry["decision"] = _decision(instance, stage, row)
    return entry


def _writer(lake, ds, table: str, stage: str, fields, frag_id: int) -> dict[str, Any]:
    """The job that wrote the data file holding `stage`'s columns on fragment `frag_id`, and
    when (from its per-fragment record); empty when no record names one."""
    ids = _field_ids(ds, {f.name for f in fields})
    frag = next((fr for fr in ds.get_fragments() if fr.fragment_id == frag_id), None)
    if frag is None:
        return {}
    hit = next((df for df in frag.data_files() if ids & set(df.fields)), None)
    if hit is None:
        return {}
    records = StageRecords(lake.store, table, stage)
    best: dict[str, Any] = {}
    for rec in records.of_stem(file_stem(hit.path)):
        raw = lake.store.get(rec.key)
        body = json.loads(raw) if raw else {}
        if body.get("written_at", 0) >= best.get("written_at", 0):
            best = body
    if not best.get("job"):
        return {}
    return {"job": best["job"], "written_at": best.get("written_at"), "from": "fragment record"}


def _field_ids(ds, names: set[str]) -> set[int]:
    def ids(f) -> list[int]:
        return [f.id()] + [i for c in f.children() for i in ids(c)]

    return {i for f in ds.lance_schema.fields() if f.name() in names for i in ids(f)}


def _reads(lake, ds, instance) -> list[dict[str, str]]:
    """The columns the stage declares it reads (inputs, lookups, where), each with its writer."""
    by_name = {f.name: owner(f) or "ingest" for f in ds.schema}
    names = set(by_name)
    cols = list(instance.input_columns())
    cols += sorted(where_columns(instance.where, names) - set(cols))
    out = [{"column": c, "stage": by_name.get(c, "?")} for c in cols]
    for lk in instance.lookups:
        other = {f.name: owner(f) or "ingest" for f in lake.table(lk.table).schema}
        out += [{"column": f"{lk.table}.{c}", "stage": other.get(c, "?")} for c in lk.columns]
    return out


def _decision(instance, stage: str, row: dict[str, Any]) -> dict[str, Any]:
    """The stored decision with, per reason, the threshold it crossed and by how much."""
    out: dict[str, Any] = {
        "keep": row.get(f"{stage}_keep"),
        "reasons": row.get(f"{stage}_reasons") or [],
        "flags": row.get(f"{stage}_flags") or [],
        "thresholds": [],
    }
    if row.get(f"{stage}_of"):  # a dedup decision: the representative it duplicates
        out["of"], out["similarity"] = row[f"{stage}_of"], short(row.get(f"{stage}_similarity"))
    if isinstance(instance, Filter):
        for c in instance.crossings(row):
            out["thresholds"].append(
                {
                    "tag": c.tag,
                    "column": c.column,
                    "value": round(c.value, 4),
                    "limit": c.limit,
                    "kind": c.kind,
                    "setting": c.setting,
                    "margin": round(c.margin, 4),
                    "rejects": c.tag in out["reasons"],
                }
            )
    return out


def short(v: Any) -> Any:
    """A value as explain shows it: long lists and bytes summarised, floats rounded."""
    if isinstance(v, bytes | bytearray):
        return f"<{len(v)} bytes>"
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, list) and len(v) > 8:
        return f"<{len(v)} values>"
    if isinstance(v, str) and len(v) > 200:
        return v[:197] + "..."
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def explain_lines(e: dict[str, Any]) -> list[str]:
    """`sila explain` for people: the verdict first, then each stage (fits 80 columns)."""
    head = e["verdict"].upper() + (f" by {', '.join(e['rejected_by'])}" if e["rejected_by"] else "")
    out = [f"{e['table']}/{e['id']}", f"  {head}"]
    if e.get("parent"):
        out.append(f"  from {e['parent']['table']}/{e['parent']['id']}")
    for s in e["stages"]:
        out += [""] + _stage_lines(s)
    return out


def _stage_lines(s: dict[str, Any]) -> list[str]:
    model = s.get("model") or "-"
    if s.get("random_weights"):
        model += " (RANDOM weights)"
    out = [f"{s['stage']}  version {s.get('version') or '-'}  model {model}"]
    if s.get("job"):
        when = _when(s.get("written_at"))
        out.append(f"  written by job {s['job']}" + (f" at {when}" if when else ""))
    if s.get("error"):
        out.append(f"  ERROR: {s['error']}")
    d = s.get("decision")
    if d:
        keep = {True: "kept", False: "REJECTED", None: "undetermined"}[d["keep"]]
        out.append(
            f"  decision: {keep}" + (f" ({', '.join(d['reasons'])})" if d["reasons"] else "")
        )
        for t in d["thresholds"]:
            sign = "<" if t["kind"] == "min" else ">"
            role = "rejects" if t["rejects"] else "flag"
            out.append(
                f"    {t['tag']}: {t['column']} {t['value']:g} {sign} {t['setting']} "
                f"{t['limit']:g} (by {t['margin']:g}; {role})"
            )
        if d.get("of"):
            sim = d.get("similarity")
            out.append(f"    duplicate of {d['of']}" + (f" (similarity {sim:g})" if sim else ""))
        if d["flags"]:
            out.append(f"    flags: {', '.join(d['flags'])}")
    facts = {k.removeprefix("sila."): v for k, v in s.get("facts", {}).items()}
    facts.pop("identity", None)
    if facts:
        out.append("  facts: " + ", ".join(f"{k}={_clip(v, 40)}" for k, v in facts.items()))
    changed = s.get("changed_settings")
    if changed:
        out.append("  settings: " + ", ".join(f"{k}={_clip(v, 40)}" for k, v in changed.items()))
    elif s.get("settings"):
        out.append("  settings: the defaults")
    if s.get("reads"):
        by: dict[str, list[str]] = {}
        for r in s["reads"]:
            by.setdefault(r["stage"], []).append(r["column"])
        out.append("  reads: " + "; ".join(f"{', '.join(c)} ({st})" for st, c in by.items()))
    out.append("  " + ", ".join(f"{k}={_clip(v, 40)}" for k, v in s["columns"].items()))
    return out


def _clip(v: Any, n: int) -> str:
    text = str(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
