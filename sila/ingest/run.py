"""Ingest: media files, folders, globs, JSONL/CSV manifests and object-store prefixes become rows
of `sources`, spread over fragments sized for parallel work.

`id` is a content hash, so identical bytes are stored once and re-ingesting adds nothing; every
name a file was seen under goes to `source_paths`. Every input is accounted for: added, already
present, failed (a row with `ingest_error`, or a refused manifest line), missing, or skipped
(hidden, or outside the folder/manifest it was named in). Parts: `ingest_walk` (what is read),
`manifest` (lines and `meta_*` types), `ingest_write` (hashing, probing, fragments).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from sila.ingest.fill import fill_meta, split_meta
from sila.ingest.manifest import MANIFEST_SUFFIXES, META_PREFIX, MetaTypes
from sila.ingest.walk import Entry, Walker
from sila.ingest.write import (
    DEFAULT_BYTES_PER_FRAGMENT,
    DEFAULT_ROWS_PER_FRAGMENT,
    Described,
    PathLog,
    SourcesWriter,
    describe,
)
from sila.lake import Lake
from sila.schema import INGEST, owned, sources_schema

log = logging.getLogger(__name__)

__all__ = ["MANIFEST_SUFFIXES", "IngestReport", "ingest"]

CHUNK = 64  # entries hashed and probed ahead of the writer (metadata only, never bytes)
THREADS = 4


@dataclass
class IngestReport:
    added: int = 0  # rows written, including rows with an ingest_error
    present: int = 0  # content already in the lake (its path is still recorded)
    failed: int = 0  # rows with an ingest_error + manifest lines that could not be used
    skipped_hidden: int = 0
    skipped_outside: int = 0
    fragments: int = 0
    paths_recorded: int = 0  # new rows of source_paths
    meta_filled: int = 0  # rows already present whose empty meta_* cells a manifest filled
    failures: list[dict] = field(default_factory=list)  # {id, path, error, origin}
    missing: list[str] = field(default_factory=list)  # inputs that matched no file
    skipped: list[dict] = field(default_factory=list)  # {path, reason, detail}, the first 200
    warnings: list[dict] = field(default_factory=list)  # meta conflicts, duplicate values

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "already_present": self.present,
            "failed": self.failed,
            "missing_count": len(self.missing),
            "skipped_hidden": self.skipped_hidden,
            "skipped_outside": self.skipped_outside,
            "fragments": self.fragments,
            "paths_recorded": self.paths_recorded,
            "meta_filled": self.meta_filled,
            "failures": self.failures,
            "missing": self.missing,
            "skipped": self.skipped,
            "warnings": self.warnings,
        }


def ingest(
    lake: Lake,
    inputs: list[str],
    *,
    reference: bool = False,
    progress: bool = False,
    rows_per_fragment: int = DEFAULT_ROWS_PER_FRAGMENT,
    bytes_per_fragment: int = DEFAULT_BYTES_PER_FRAGMENT,
    allow_outside: bool = False,
) -> IngestReport:
    """Add `inputs` to the lake's `sources` table; see the module docstring."""
    report = IngestReport()
    from sila.coordinator.store import is_remote

    walker = Walker(
        inputs,
        allow_outside=allow_outside,
        storage_options=lake.storage_options,
        lake_dir=None if is_remote(lake.uri) else lake.uri,
    )
    lake.init()
    existing = lake.table("sources").schema if lake.has_table("sources") else None
    types = MetaTypes(existing)
    for meta in walker.metas():
        types.observe(meta)
    types.settle()
    schema = _prepare_table(lake, existing, types)
    known = _known(lake, existing)
    paths = PathLog(lake)
    fills: dict[str, dict[str, Any]] = {}  # id already present -> its empty cells to fill

    with tempfile.TemporaryDirectory(prefix="sila-ingest-") as scratch:
        writer = SourcesWriter(
            lake,
            schema,
            rows=rows_per_fragment,
            max_bytes=bytes_per_fragment,
            reference=reference,
            on_commit=paths.flush,
        )
        writer.write(_new_rows(_described(walker, scratch), report, types, known, paths, fills))
    report.meta_filled = fill_meta(lake, fills)
    for d in writer.late_failures:
        report.failed += 1
        report.failures.append({"id": d.id, "path": d.entry.shown, "error": d.row["ingest_error"],
                                "origin": d.entry.origin})  # fmt: skip
    report.fragments = writer.fragments_written
    report.paths_recorded = paths.added
    w = walker.report
    report.missing = w.missing
    report.skipped_hidden, report.skipped_outside = w.skipped_hidden, w.skipped_outside
    report.skipped = [asdict(s) for s in w.skipped]
    report.warnings = w.meta_warnings + report.warnings
    for bad in w.bad_lines:  # not rows: there is no file to make one from
        report.failed += 1
        report.failures.append({"id": None, "path": bad["path"], "error": bad["error"],
                                "origin": bad["path"]})  # fmt: skip
    return report


def _prepare_table(lake: Lake, existing: pa.Schema | None, types: MetaTypes) -> pa.Schema:
    """The schema this ingest writes; the table gains any column it lacks (metadata-only)."""
    metas = owned([pa.field(c, t) for c, t in types.types.items()], INGEST, "1")
    schema = pa.schema([*sources_schema(), *metas])
    if existing is None:
        try:
            lake.create_table("sources", schema)
        except (OSError, ValueError):  # another ingest created it first
            existing = lake.table("sources").schema
    if existing is not None:
        missing = [f for f in schema if f.name not in existing.names]
        if missing:
            lake.table("sources").add_columns(missing)
    return schema


def _known(lake: Lake, existing: pa.Schema | None) -> dict[str, dict[str, Any]]:
    """Ids already in `sources`, with their stored `meta_*` values (to report differing ones)."""
    if existing is None:
        return {}
    cols = ["id", *[n for n in existing.names if n.startswith(META_PREFIX)]]
    t = lake.table("sources").to_table(columns=cols)
    ids = t["id"].to_pylist()
    if len(cols) == 1:
        return dict.fromkeys(ids, {})
    rows = t.drop_columns(["id"]).to_pylist()
    return {
        i: {k: v for k, v in r.items() if v is not None} for i, r in zip(ids, rows, strict=True)
    }


def _described(walker: Walker, scratch: str) -> Iterator[Described]:
    """Entries hashed and probed by a few threads, CHUNK at a time, in order."""
    chunk: list[Entry] = []
    with ThreadPoolExecutor(max_workers=THREADS) as pool:

        def run(batch: list[Entry]) -> Iterator[Described]:
            return pool.map(lambda e: describe(e, scratch, walker.store_for_url), batch)

        for e in walker:
            chunk.append(e)
            if len(chunk) >= CHUNK:
                yield from run(chunk)
                chunk = []
        yield from run(chunk)


def _new_rows(
    items: Iterator[Described],
    report: IngestReport,
    types: MetaTypes,
    known: dict[str, dict[str, Any]],
    paths: PathLog,
    fills: dict[str, dict[str, Any]],
) -> Iterator[Described]:
    """Only content the lake lacks goes on to the writer; every item is counted once. For
    content already present, manifest values go to its empty cells (`fills`)."""
    for d in items:
        e = d.entry
        paths.add(d.id, e)
        meta, errors = types.coerce(e.meta)
        for err in errors:
            report.warnings.append({"id": d.id, "path": e.shown, "origin": e.origin,
                                    "error": f"{e.origin or e.shown}: {err}"})  # fmt: skip
        if d.id in known:
            report.present += 1
            # a later mention in this ingest finds an earlier one's fill as stored
            fill, differ = split_meta(meta, {**known[d.id], **fills.get(d.id, {})})
            if fill:
                fills.setdefault(d.id, {}).update(fill)
            if differ:
                report.warnings.append(
                    {"id": d.id, "path": e.shown, "origin": e.origin,
                     "error": f"{e.origin or e.shown}: same content as source {d.id}, which keeps "
                              f"its first values; not stored: {differ}"}
                )  # fmt: skip
            d.drop_copy()
            continue
        known[d.id] = {k: v for k, v in meta.items() if v is not None}
        d.row.update(meta)
        report.added += 1
        if d.row.get("ingest_error"):
            report.failed += 1
            report.failures.append({"id": d.id, "path": e.shown, "error": d.row["ingest_error"],
                                    "origin": e.origin})  # fmt: skip
            d.drop_copy()  # error rows store no bytes
        yield d
