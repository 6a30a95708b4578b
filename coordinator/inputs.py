"""Read a fragment's input columns for a stage: `where` selection, blobs as local files, lookups.

Blob columns (media) never travel as bytes through the pipeline: each worker materialises them
into a scratch directory and hands the stage a local file path. Columns of other tables come
only through the stage's declared lookups (coordinator/lookups.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sila.coordinator.lookups import LookupReader, lookup_batch_columns

from sila.errors import ContractError
from sila.lake import Lake
from sila.schema import is_blob
from sila.stage import Lookup, Stage

ADDR = "_rowaddr"


@dataclass
class Selection:
    """The rows of one fragment a stage will compute, in physical order."""

    offsets: np.ndarray  # uint32 physical offsets within the fragment
    table: pa.Table  # plain (non-blob, same-table) input columns + _rowaddr, one row per offset


def take_addresses(ds: lance.LanceDataset, addresses: list[int], columns: list[str]) -> pa.Table:
    """Rows at `addresses` (fragment id << 32 | offset), in that order, by the public
    per-fragment `take`."""
    by_frag: dict[int, list[int]] = {}
    for a in dict.fromkeys(addresses):
        by_frag.setdefault(a >> 32, []).append(a & 0xFFFFFFFF)
    parts, order = [], []
    for fid, offsets in by_frag.items():
        parts.append(ds.get_fragment(fid).take(offsets, columns=columns))
        order += [(fid << 32) | o for o in offsets]
    tbl = (
        pa.concat_tables(parts)
        if parts
        else pa.schema([ds.schema.field(c) for c in columns]).empty_table()
    )
    at = {a: i for i, a in enumerate(order)}
    return tbl.take(pa.array([at[a] for a in addresses], pa.int64()))


def combine_where(*preds: str | None) -> str | None:
    parts = [f"({p})" for p in preds if p]
    return " AND ".join(parts) if parts else None


def own_input_columns(stage) -> list[str]:
    """The columns of its own table a stage reads: an instance's `input_columns()` (settings
    may add some, e.g. assign_split's group column), a class's declared `inputs`."""
    return stage.input_columns() if isinstance(stage, Stage) else list(stage.inputs)


def select_rows(ds: lance.LanceDataset, stage, fragment_id: int, where: str | None) -> Selection:
    """The rows of a fragment `stage` (an instance, or a class) computes, with the plain input
    columns and the join keys of its lookups."""
    frag = ds.get_fragment(fragment_id)
    schema = ds.schema
    wanted = own_input_columns(stage)
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise ContractError(
            f"stage '{stage.name}': input column(s) {missing} do not exist in table "
            f"'{stage.table}' (columns: {', '.join(sorted(schema.names))}); run the stage that "
            "produces them first, or fix `inputs` (or the setting that names them)"
        )
    plain = [c for c in wanted if not is_blob(schema.field(c))]
    for lk in stage.lookups:  # the join keys travel with the segment
        if lk.key not in plain:
            plain.append(lk.key)
    try:
        tbl = frag.to_table(columns=plain, filter=where, with_row_address=True)
    except (ValueError, OSError, RuntimeError) as e:
        raise ContractError(f"stage '{stage.name}': cannot apply where {where!r}: {e}") from e
    offsets = (tbl.column(ADDR).to_numpy() & 0xFFFFFFFF).astype(np.uint32)
    if len(offsets) > 1 and not np.all(np.diff(offsets.astype(np.int64)) > 0):
        order = np.argsort(offsets, kind="stable")
        tbl = tbl.take(pa.array(order))
        offsets = offsets[order]
    return Selection(offsets, tbl.combine_chunks())


class BlobMaterializer:
    """Writes blob values to a scratch dir once per fragment and hands out paths."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._dir: str | None = None
        self._lookups: LookupReader | None = None
        self._paths: dict[tuple[str, str, int], str | None] = {}
        self._tables: dict[str, lance.LanceDataset] = {}

    @property
    def dir(self) -> str:
        if self._dir is None:  # only stages with blob inputs pay for a scratch dir
            self._dir = tempfile.mkdtemp(prefix="sila-blobs-")
        return self._dir

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        self._paths.clear()
        self._tables.clear()
        self._lookups = None

    def trim(self, max_files: int = 64) -> None:
        """Keep the scratch dir bounded: drop the oldest materialised files beyond `max_files`."""
        owned = [k for k, v in self._paths.items() if v and self._dir and v.startswith(self._dir)]
        for k in owned[: max(0, len(owned) - max_files)]:
            path = self._paths.pop(k)
            if path:
                with contextlib.suppress(OSError):
                    os.remove(path)

    def _ds(self, table: str) -> lance.LanceDataset:
        if table not in self._tables:
            self._tables[table] = self.lake.table(table)
        return self._tables[table]

    @property
    def lookups(self) -> LookupReader:
        """The reader of the stage's declared lookups (one per worker, like this object)."""
        if self._lookups is None:
            self._lookups = LookupReader(self.lake, self)
        return self._lookups

    def refresh(self, table: str) -> lance.LanceDataset:
        """The table's latest version (appends since the handle was opened become visible)."""
        self._tables[table] = self.lake.table(table)
        return self._tables[table]

    def paths(
        self,
        table: str,
        column: str,
        addresses: list[int],
        ds: lance.LanceDataset | None = None,
    ) -> list[str | None]:
        """Local file paths of blob values at row `addresses` (None for an empty blob), from
        `ds` (a lookup's pinned version) or this worker's handle of `table`."""
        ds = ds if ds is not None else self._ds(table)
        todo = [a for a in dict.fromkeys(addresses) if (table, column, a) not in self._paths]
        if todo:
            try:
                blobs = ds.take_blobs(column, addresses=todo)
            except (ValueError, OSError, RuntimeError, IndexError):
                # rows appended after this handle was opened ("non-existent fragment"): the
                # table grew under a running job, which must never fail it. Reopen, retry once.
                ds = self.refresh(table)
                blobs = ds.take_blobs(column, addresses=todo)
            fallback = self._reference_uris(ds, todo) if column == "media" else {}
            for addr, blob in zip(todo, blobs, strict=True):
                path = None
                if blob is not None and blob.size() > 0:
                    path = os.path.join(self.dir, f"{table}-{column}-{addr}.bin")
                    with open(path, "wb") as out:
                        shutil.copyfileobj(blob, out, 1 << 20)
                    blob.close()
                elif fallback.get(addr):
                    path = self._local_copy(fallback[addr])
                self._paths[(table, column, addr)] = path
        return [self._paths[(table, column, a)] for a in addresses]

    def _local_copy(self, uri: str) -> str:
        """A referenced file on an object store is downloaded once into the scratch dir."""
        from sila.coordinator.store import is_remote, open_store

        if not is_remote(uri):
            return uri
        import obstore

        scheme, _, rest = uri.partition("://")
        bucket, _, key = rest.partition("/")
        path = os.path.join(self.dir, "ref-" + str(abs(hash(uri))) + "-" + os.path.basename(key))
        with open(path, "wb") as out:
            for chunk in obstore.get(
                open_store(f"{scheme}://{bucket}", self.lake.storage_options), key
            ).stream():
                out.write(chunk)
        return path

    def _reference_uris(self, ds: lance.LanceDataset, addresses: list[int]) -> dict[int, str]:
        """Sources ingested by reference keep a path in `uri` instead of bytes."""
        if "uri" not in ds.schema.names or "stored" not in ds.schema.names:
            return {}
        cols = ["uri", "stored"] + (["uri_bytes"] if "uri_bytes" in ds.schema.names else [])
        rows = take_addresses(ds, addresses, cols).to_pylist()
        out = {}
        for a, r in zip(addresses, rows, strict=True):
            if r["stored"] != "reference":
                continue
            if r.get("uri_bytes"):  # a name that is not UTF-8 (escaped in `uri`): open it by
                # its raw bytes, hand the stage a copy whose path is a valid string
                ext = os.path.splitext(r["uri"])[1][:8]
                dest = os.path.join(self.dir, f"reference-{a}{ext}")
                shutil.copyfile(bytes(r["uri_bytes"]), dest)
                out[a] = dest
            else:
                out[a] = r["uri"]
        return out


@dataclass(frozen=True)
class InputPlan:
    """How to build a stage's input batch from a segment's plain columns (picklable for Ray):
    its own input columns, which of them are blobs, its lookups and the versions the job
    pinned for the looked-up tables."""

    table: str
    inputs: tuple[str, ...]
    blob_inputs: frozenset[str]
    lookups: tuple[Lookup, ...] = ()
    pinned: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, stage, schema: pa.Schema, pinned: Mapping[str, int] | None = None) -> InputPlan:
        """The plan of `stage` (an instance, or a class) on a table of `schema`; `pinned`:
        table -> version the job pinned (`lookups.pin_lookups`)."""
        inputs = own_input_columns(stage)
        blobs = frozenset(c for c in inputs if is_blob(schema.field(c)))
        pins = tuple(sorted((pinned or {}).items()))
        return cls(stage.table, tuple(inputs), blobs, tuple(stage.lookups), pins)


def segment_part(sel: Selection, start: int, stop: int) -> pa.RecordBatch:
    """The plain columns (and row addresses) of selected rows [start, stop): cheap to ship."""
    if stop <= start:
        return pa.RecordBatch.from_pylist([], schema=sel.table.schema)
    batches = sel.table.slice(start, stop - start).to_batches()
    if len(batches) == 1:  # one chunk (select_rows combines once): a zero-copy slice
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def materialize(plan: InputPlan, part: pa.RecordBatch, blobs: BlobMaterializer) -> pa.RecordBatch:
    """The stage's input batch: its own columns (blobs as local file paths), then every
    lookup's columns as ``<table>.<column>``."""
    cols: dict[str, pa.Array] = {}
    for c in plan.inputs:
        if c in plan.blob_inputs:
            cols[c] = pa.array(
                blobs.paths(plan.table, c, part.column(ADDR).to_pylist()), pa.string()
            )
        else:
            cols[c] = part.column(c)
    if plan.lookups:
        cols.update(lookup_batch_columns(blobs.lookups, plan.lookups, part, dict(plan.pinned)))
    if not cols:  # a stage with no inputs still needs its row count
        cols[ADDR] = part.column(ADDR)
    return pa.RecordBatch.from_pydict(cols)


def physical_values(
    ds: lance.LanceDataset, fragment_id: int, schema: pa.Schema, physical_rows: int
) -> pa.Table:
    """A fragment's current values of `schema`'s columns at every PHYSICAL offset: deleted rows
    (absent from a scan) get nulls, so the table lines up with a new data file."""
    tbl = ds.get_fragment(fragment_id).to_table(columns=schema.names, with_row_address=True)
    offsets = (tbl.column(ADDR).to_numpy() & 0xFFFFFFFF).astype(np.uint32)
    values = tbl.drop_columns([ADDR]).cast(schema)
    if len(offsets) == physical_rows:
        return values
    return scatter(physical_rows, offsets, values)


def _distinct(offsets: np.ndarray) -> bool:
    return len(np.unique(offsets)) == len(offsets)  # unsorted: the slow check


def scatter(
    physical_rows: int, offsets: np.ndarray, values: pa.Table, base: pa.Table | None = None
) -> pa.Table:
    """A table of `physical_rows` rows: `values` at `offsets`, `base` (or nulls) elsewhere.

    Refuses (ContractError) anything that would put a value on another row: a count mismatch,
    repeated or out-of-range offsets, a base of another length."""
    if values.num_rows != len(offsets):
        raise ContractError(
            f"internal: {values.num_rows} computed rows for {len(offsets)} selected rows"
        )
    if len(offsets) and (
        int(offsets.max()) >= physical_rows
        or not (np.all(np.diff(offsets.astype(np.int64)) > 0) or _distinct(offsets))
    ):
        raise ContractError("internal: selected row offsets repeat or exceed the fragment")
    if base is not None and base.num_rows != physical_rows:
        raise ContractError(
            f"internal: base values of {base.num_rows} rows for a fragment of {physical_rows}"
        )
    idx = np.full(physical_rows, -1, dtype=np.int64)
    idx[offsets.astype(np.int64)] = np.arange(len(offsets))
    mask = idx < 0
    take = pa.array(np.where(mask, 0, idx), mask=mask)
    out = (
        values.take(take)
        if len(offsets)
        else pa.table(
            {f.name: pa.nulls(physical_rows, f.type) for f in values.schema}, schema=values.schema
        )
    )
    if base is None:
        return out
    keep = pa.array(mask)
    return pa.table(
        {n: pc.if_else(keep, base.column(n), out.column(n)) for n in values.schema.names},
        schema=values.schema,
    )
