"""Ingest: media files, directories, globs and JSONL/CSV manifests become rows of `sources`.

`id` is a content hash, so identical bytes are stored once and re-ingesting adds nothing. Files
that cannot be read or decoded become rows with `ingest_error`, never a crash.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import lance
import pyarrow as pa

from sila.lake import Lake
from sila.media import MediaError, probe
from sila.schema import sources_schema

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".jsonl", ".csv")
BATCH = 16


@dataclass
class IngestReport:
    added: int = 0
    present: int = 0
    failed: int = 0  # rows added with an ingest_error
    failures: list[dict] = field(default_factory=list)  # {path, error}
    missing: list[str] = field(default_factory=list)  # inputs that matched no file

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "already_present": self.present,
            "failed": self.failed,
            "failures": self.failures,
            "missing": self.missing,
        }


def expand(inputs: list[str]) -> tuple[list[str], list[str]]:
    """Files named by paths, directories (recursive), globs and manifests; plus unmatched inputs."""
    files: list[str] = []
    missing: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, names in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
        elif item.endswith(MANIFEST_SUFFIXES) and os.path.isfile(item):
            files += _manifest(item)
        elif os.path.exists(item) or os.path.islink(item):
            files.append(item)
        elif any(ch in item for ch in "*?["):
            matched = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            files += matched
            if not matched:
                missing.append(item)
        else:
            missing.append(item)
    seen: dict[str, None] = {}
    for f in files:
        seen.setdefault(os.path.abspath(f))
    return list(seen), missing


def _manifest(path: str) -> list[str]:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as fh:
        if path.endswith(".jsonl"):
            rows = [json.loads(line) for line in fh if line.strip()]
        else:
            rows = list(csv.DictReader(fh))
    out = []
    for i, row in enumerate(rows):
        p = row.get("path") or row.get("uri") or row.get("file")
        if not p:
            raise ValueError(f"manifest {path} row {i + 1} has no 'path' (or 'uri') field")
        out.append(p if os.path.isabs(p) else os.path.join(base, p))
    return out


def content_id(path: str) -> tuple[str, int]:
    h = hashlib.blake2b(digest_size=16)
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _describe(path: str) -> dict:
    row: dict = {"uri": path, "filename": os.path.basename(path)}
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # a FIFO or device would block or never end
            raise OSError(0, "not a regular file (a pipe, socket or device)")
        row["id"], row["size_bytes"] = content_id(path)
    except OSError as e:
        row["id"] = "unreadable-" + hashlib.blake2b(path.encode(), digest_size=12).hexdigest()
        row["ingest_error"] = f"unreadable: {e.strerror or e}"
        return row
    try:
        info = probe(path)
        row.update({k: v for k, v in info.as_dict().items() if k != "kind"})
        row["media_kind"] = info.kind
    except MediaError as e:
        row["ingest_error"] = str(e)
    return row


def _fetch_remote(
    inputs: list[str], storage_options: dict, scratch: str
) -> tuple[dict[str, str], list[str]]:
    """Download object-store inputs (an object or every object under a prefix) to `scratch`.
    Returns {local path: remote uri} and the inputs that matched nothing."""
    import obstore

    from sila.coordinator.store import open_store

    local: dict[str, str] = {}
    missing: list[str] = []
    for uri in inputs:
        scheme, _, rest = uri.partition("://")
        bucket, _, key = rest.partition("/")
        store = open_store(f"{scheme}://{bucket}", storage_options)
        keys = [
            m["path"]
            for chunk in obstore.list(store, prefix=key or None)
            for m in chunk
            if m["path"] == key or not key or m["path"].startswith(key.rstrip("/") + "/")
        ]
        if not keys:
            missing.append(uri)
        for k in sorted(keys):
            path = os.path.join(
                scratch, hashlib.sha1(k.encode()).hexdigest()[:16] + "-" + os.path.basename(k)
            )
            with open(path, "wb") as out:
                for chunk in obstore.get(store, k).stream():
                    out.write(chunk)
            local[path] = f"{scheme}://{bucket}/{k}"
    return local, missing


def ingest(
    lake: Lake, inputs: list[str], *, reference: bool = False, progress: bool = False
) -> IngestReport:
    import tempfile

    from sila.coordinator.store import is_remote

    with tempfile.TemporaryDirectory(prefix="sila-ingest-") as scratch:
        remote, missing = _fetch_remote(
            [i for i in inputs if is_remote(i)], lake.storage_options, scratch
        )
        return _ingest(lake, [i for i in inputs if not is_remote(i)], remote, missing, reference)


def _ingest(
    lake: Lake, inputs: list[str], remote: dict[str, str], missing: list[str], reference: bool
) -> IngestReport:
    report = IngestReport()
    files, report.missing = expand(inputs)
    files += list(remote)
    report.missing += missing
    lake.init()
    schema = sources_schema()
    known: set[str] = set()
    if lake.has_table("sources"):
        known = set(lake.table("sources").to_table(columns=["id"]).column("id").to_pylist())
    now = datetime.now(UTC)

    new: list[dict] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for row in pool.map(_describe, files):
            if row["uri"] in remote:  # keep where it came from; read the downloaded copy
                row["_local"], row["uri"] = row["uri"], remote[row["uri"]]
                row["filename"] = os.path.basename(row["uri"])
            if row["id"] in known:
                report.present += 1
                continue
            known.add(row["id"])
            report.added += 1
            if row.get("ingest_error"):
                report.failed += 1
                report.failures.append({"path": row["uri"], "error": row["ingest_error"]})
            row["ingested_at"] = now
            row["stored"] = "reference" if reference else "blob"
            new.append(row)
    if not new:
        return report

    def batches() -> Iterator[pa.RecordBatch]:  # media bytes are read lazily, BATCH files at a time
        for i in range(0, len(new), BATCH):
            yield _batch(new[i : i + BATCH], schema, reference)

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    mode = "append" if lake.has_table("sources") else "create"
    lance.write_dataset(
        reader,
        lake.table_uri("sources"),
        schema=schema,
        mode=mode,
        storage_options=lake.storage_options or None,
    )
    return report


def _batch(rows: list[dict], schema: pa.Schema, reference: bool) -> pa.RecordBatch:
    cols = {}
    for f in schema:
        if f.name == "media":
            cols["media"] = pa.array(
                [
                    None
                    if reference or r.get("ingest_error", "").startswith("unreadable")
                    else _read(r.get("_local") or r["uri"])
                    for r in rows
                ],
                pa.large_binary(),
            )
        else:
            cols[f.name] = pa.array([r.get(f.name) for r in rows], f.type)
    return pa.RecordBatch.from_pydict(cols, schema=schema)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None
