"""Writing an ingest: each file is hashed and probed (`describe`), then its bytes are streamed
into `sources` fragments bounded by rows and bytes (`SourcesWriter`).

Memory: a batch's bytes are read straight into one Arrow buffer that Lance writes without
copying, and a batch holds at most BATCH_BYTES unless a single file is larger; so peak memory is
about one copy of the largest file plus a constant. Why not stream: pylance 14 can write a blob
in chunks (`LanceFileSession.open_dedicated_blob_writer`, blob v2), but only in datasets created
with file format 2.2, which refuse the legacy `lance-encoding:blob` column every SILA table uses,
and a dataset's format is fixed when it is created; the legacy column takes whole values.
Error rows and `--reference` rows store no bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import lance
import pyarrow as pa
from lance.commit import CommitConflictError

from sila.ingest.walk import Entry
from sila.lake import Lake
from sila.media import MediaError, probe

log = logging.getLogger(__name__)

DEFAULT_ROWS_PER_FRAGMENT = 64
DEFAULT_BYTES_PER_FRAGMENT = 2 << 30
BATCH_ROWS = 16
BATCH_BYTES = 64 << 20
COMMIT_EVERY = 16  # fragments per Append commit (commit cost grows with the table: LANCE_NOTES 10)
COMMIT_EVERY_S = 20.0  # ... or this often, so a long ingest's progress is durable


@dataclass
class Described:
    """A file after hashing and probing: its `sources` columns and where its bytes are."""

    entry: Entry
    row: dict[str, Any]
    local: str | None  # the file to read bytes from (a scratch copy for remote objects)
    scratch: bool = False  # `local` is ours to delete

    @property
    def id(self) -> str:
        return self.row["id"]

    def drop_copy(self) -> None:
        if self.scratch and self.local:
            try:
                os.remove(self.local)
            except OSError:
                pass
            self.scratch = False


def _hash_file(path: str) -> tuple[str, int]:
    h = hashlib.blake2b(digest_size=16)
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _download(uri: str, scratch: str, store_for: Callable[[str], Any]) -> tuple[str, str, int]:
    """Stream one object to a scratch file, hashing on the way: (local path, id, size)."""
    import obstore

    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    fd, path = tempfile.mkstemp(
        prefix="obj-", suffix="-" + os.path.basename(key)[-60:], dir=scratch
    )
    h = hashlib.blake2b(digest_size=16)
    size = 0
    with os.fdopen(fd, "wb") as out:
        for chunk in obstore.get(store_for(f"{scheme}://{bucket}"), key).stream():
            h.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return path, h.hexdigest(), size


def describe(entry: Entry, scratch: str, store_for: Callable[[str], Any]) -> Described:
    """Hash and probe one file; any problem becomes `ingest_error`, never an exception."""
    name = entry.shown.rstrip("/").rsplit("/", 1)[-1]
    row: dict[str, Any] = {"uri": entry.shown, "uri_bytes": entry.raw, "filename": name}
    d = Described(entry, row, entry.path)
    try:
        if entry.remote:
            d.local, row["id"], row["size_bytes"] = _download(entry.path, scratch, store_for)
            d.scratch = True
        else:
            if not stat.S_ISREG(os.stat(entry.path).st_mode):  # a FIFO would block forever
                raise OSError(0, "not a regular file (a pipe, socket or device)")
            row["id"], row["size_bytes"] = _hash_file(entry.path)
    except Exception as e:  # noqa: BLE001 - OSError, obstore errors: one row each, never a crash
        row["id"] = "unreadable-" + hashlib.blake2b(entry.raw or entry.shown.encode(),
                                                    digest_size=12).hexdigest()  # fmt: skip
        reason = getattr(e, "strerror", None) or str(e).strip().splitlines()[0] or type(e).__name__
        row["ingest_error"] = f"unreadable: {reason}: {entry.shown}"
        d.drop_copy()
        d.local = None
        return d
    try:
        info = probe(d.local, display=entry.shown)
        row.update({k: v for k, v in info.as_dict().items() if k != "kind"})
        row["media_kind"] = info.kind
    except MediaError as e:
        row["ingest_error"] = str(e)
    return d


class SourcesWriter:
    """Streams described rows into fragments of at most `rows` rows and `max_bytes` stored bytes,
    committing a group of fragments at a time (one Append each)."""

    def __init__(
        self,
        lake: Lake,
        schema: pa.Schema,
        *,
        rows: int = DEFAULT_ROWS_PER_FRAGMENT,
        max_bytes: int = DEFAULT_BYTES_PER_FRAGMENT,
        reference: bool = False,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        if rows < 1 or max_bytes < 1:
            raise ValueError("rows and bytes per fragment must be at least 1")
        self.lake, self.schema, self.rows, self.max_bytes = lake, schema, rows, max_bytes
        self.reference = reference
        self.on_commit = on_commit
        self.fragments_written = 0
        self.late_failures: list[Described] = []  # files that changed between hash and read
        self.now = datetime.now(UTC)

    def stores_bytes(self, d: Described) -> bool:
        return not self.reference and d.local is not None and not d.row.get("ingest_error")

    def write(self, items: Iterator[Described]) -> None:
        it = _Peek(items)
        pending: list[Any] = []
        last = time.monotonic()
        self._ds = self.lake.table("sources")  # opened once: ~20 ms each time
        while it.more():
            reader = pa.RecordBatchReader.from_batches(self.schema, self._fragment(it))
            pending += lance.fragment.write_fragments(
                reader,
                self._ds,
                schema=self.schema,
                # our bounds decide where a fragment ends (beyond 2**32 rows Lance wraps to 0)
                max_rows_per_file=self.rows,
                max_bytes_per_file=1 << 40,
                storage_options=self.lake.storage_options or None,
            )
            if len(pending) >= COMMIT_EVERY or time.monotonic() - last > COMMIT_EVERY_S:
                self._commit(pending)
                pending, last = [], time.monotonic()
        self._commit(pending)

    def _commit(self, fragments: list[Any]) -> None:
        if fragments:  # an Append on an older version rebases over other commits
            for attempt in range(5):
                try:
                    self._ds = lance.LanceDataset.commit(
                        self._ds.uri,
                        lance.LanceOperation.Append(fragments),
                        read_version=self._ds.version,
                        storage_options=self.lake.storage_options or None,
                    )
                    break
                except CommitConflictError:  # e.g. a stage's add_columns landed meanwhile
                    if attempt == 4:
                        raise
                    time.sleep(0.2 * (attempt + 1))
                    self._ds = self.lake.table("sources")
            self.fragments_written += len(fragments)
        self.on_commit()

    def _size(self, d: Described) -> int:
        return (d.row.get("size_bytes") or 0) if self.stores_bytes(d) else 0

    def _fragment(self, it: _Peek) -> Iterator[pa.RecordBatch]:
        """Batches of one fragment: it ends before the row or byte bound would be passed (a file
        larger than the byte bound gets a fragment of its own)."""
        rows = stored = 0
        while it.more() and rows < self.rows:
            batch: list[Described] = []
            batch_bytes = 0
            while it.more() and rows < self.rows and len(batch) < BATCH_ROWS:
                size = self._size(it.peek())
                if rows and stored + size > self.max_bytes:
                    break  # the fragment is full
                if batch and batch_bytes + size > BATCH_BYTES:
                    break  # the batch is full
                batch.append(it.take())
                rows, stored, batch_bytes = rows + 1, stored + size, batch_bytes + size
            if not batch:
                break
            yield self._batch(batch)

    def _batch(self, items: list[Described]) -> pa.RecordBatch:
        media = self._media(items)  # first: a file that changed since hashing gets an error
        cols: dict[str, pa.Array] = {}
        for f in self.schema:
            if f.name == "media":
                cols["media"] = media
            elif f.name == "ingested_at":
                cols[f.name] = pa.array([self.now] * len(items), f.type)
            elif f.name == "stored":
                cols[f.name] = pa.array(["reference" if self.reference else "blob"] * len(items))
            else:
                cols[f.name] = pa.array([d.row.get(f.name) for d in items], f.type)
        return pa.RecordBatch.from_pydict(cols, schema=self.schema)

    def _media(self, items: list[Described]) -> pa.Array:
        """One Arrow buffer for the batch's bytes, filled by readinto: no intermediate copy."""
        sizes = [(d.row.get("size_bytes") or 0) if self.stores_bytes(d) else 0 for d in items]
        buf = pa.allocate_buffer(sum(sizes))
        view = memoryview(buf).cast("B")
        offsets, valid, pos = [0], [], 0
        for d, size in zip(items, sizes, strict=True):
            ok = size > 0 and _read_into(d, view[pos : pos + size])
            if size and not ok:
                self.late_failures.append(d)
            pos += size if ok else 0
            offsets.append(pos)
            valid.append(bool(ok))
            d.drop_copy()
        view.release()
        n = len(items)
        return pa.LargeBinaryArray.from_buffers(
            pa.large_binary(),
            n,
            [pa.array(valid, pa.bool_()).buffers()[1], pa.array(offsets, pa.int64()).buffers()[1],
             buf],
            null_count=valid.count(False),
        )  # fmt: skip


def _read_into(d: Described, view: memoryview) -> bool:
    """Fill `view` with the file's bytes; a file that shrank, grew or vanished since it was
    hashed becomes an error row instead of bytes that do not match its id."""
    want = len(view)
    try:
        with open(d.local, "rb", buffering=0) as fh:
            got = 0
            while got < want and (n := fh.readinto(view[got:])):
                got += n
            extra = fh.read(1)
    except OSError as e:
        d.row["ingest_error"] = f"unreadable: {e.strerror or e}: {d.entry.shown}"
        return False
    if got != want or extra:
        d.row["ingest_error"] = (
            f"changed while ingesting (was {want} bytes when hashed): {d.entry.shown}"
        )
        return False
    return True


class _Peek:
    def __init__(self, it: Iterator[Described]) -> None:
        self._it, self._head, self._done = it, None, False

    def more(self) -> bool:
        if self._head is None and not self._done:
            self._head = next(self._it, None)
            self._done = self._head is None
        return self._head is not None

    def peek(self) -> Described:
        assert self.more()
        return self._head  # type: ignore[return-value]

    def take(self) -> Described:
        d = self.peek()
        self._head = None
        return d


class PathLog:
    """The append-only `source_paths` table: every name a file was seen under, once."""

    def __init__(self, lake: Lake) -> None:
        from sila.schema import source_paths_schema

        self.lake, self.schema = lake, source_paths_schema()
        self.known: set[tuple[str, str]] = set()
        if lake.has_table("source_paths"):
            t = lake.table("source_paths").to_table(columns=["source_id", "path"])
            self.known = set(zip(t["source_id"].to_pylist(), t["path"].to_pylist(), strict=True))
        self.rows: list[dict[str, Any]] = []
        self.now = datetime.now(UTC)
        self.added = 0

    def add(self, source_id: str, entry: Entry) -> None:
        key = (source_id, entry.shown)
        if key not in self.known:
            self.known.add(key)
            self.rows.append({"source_id": source_id, "path": entry.shown,
                              "path_bytes": entry.raw, "first_seen": self.now})  # fmt: skip

    def flush(self) -> None:
        if not self.rows:
            return
        tbl = pa.Table.from_pylist(self.rows, schema=self.schema)
        mode = "append" if self.lake.has_table("source_paths") else "create"
        lance.write_dataset(
            tbl,
            self.lake.table_uri("source_paths"),
            schema=self.schema,
            mode=mode,
            storage_options=self.lake.storage_options or None,
        )
        self.added += len(self.rows)
        self.rows = []
