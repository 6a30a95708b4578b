"""Declared lookups: columns of another table joined to a segment's rows by a declared key.

A stage declares ``Lookup("sources", ("embodiment",), key="source_id")``; the worker supplies
``sources.embodiment`` for each row of a segment with a filtered scan of `sources` on the key
(``id IN (...)``, in chunks), never a whole-table dictionary. Values come from the table version
the job pinned when it started; a key that version lacks (a row appended during the run) makes
the reader move once, for that segment, to the table's latest version, and keep that newer
version for later segments (it never goes back). Blob columns arrive as local file paths, as the
stage's own blob inputs do. A key found in neither version gives nulls. The columns arrive
dictionary-encoded (one value per distinct key, each row an index into them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import lance
import pyarrow as pa

from sila.errors import ContractError
from sila.schema import is_blob
from sila.stage import Lookup

if TYPE_CHECKING:
    from sila.coordinator.inputs import BlobMaterializer

    from sila.lake import Lake

KEY_CHUNK = 512  # keys per `IN (...)` filter: bounds the SQL text of one scan
ADDR = "_rowaddr"


def sql_literal(value: Any) -> str:
    """A key value as a Lance SQL literal (strings quoted, quotes doubled)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"lookup keys must be strings or numbers, got {value!r}")
    return repr(value)


def pin_lookups(lake: Lake, stage: Any) -> dict[str, int]:
    """The current version of every table the stage looks up: what a job pins when it starts."""
    return {lk.table: lake.table(lk.table).version for lk in stage.lookups}


def check_lookups(lake: Lake, stage: Any, own_columns: set[str]) -> None:
    """Refuse a stage whose reads are undeclared (a dotted input) or whose lookups name a
    key, table or column that does not exist; each message names the fix."""
    for col in stage.inputs:
        if "." in col:
            table, _, other = col.partition(".")
            raise ContractError(
                f"stage '{stage.name}': input '{col}' reads another table; declare it as a lookup "
                f'with its join key: lookups = [Lookup("{table}", ("{other}",), key="<column of '
                f"'{stage.table}' holding the {table} row's id>\")]"
            )
    for lk in stage.lookups:
        if not isinstance(lk, Lookup):
            raise ContractError(f"stage '{stage.name}': lookups must be sila.Lookup, got {lk!r}")
        if lk.key not in own_columns:
            raise ContractError(
                f"stage '{stage.name}': the lookup of '{lk.table}' joins on '{lk.key}', which "
                f"table '{stage.table}' does not have"
            )
        names = set(lake.table(lk.table).schema.names)
        for c in (lk.on, *lk.columns):
            if c not in names:
                raise ContractError(
                    f"stage '{stage.name}': the lookup of '{lk.table}' reads '{c}', which table "
                    f"'{lk.table}' does not have (columns: {', '.join(sorted(names))})"
                )


Found = tuple[dict[Any, int], pa.Table]  # key -> row; the lookup's plain columns (+ addresses)


class LookupReader:
    """One per worker (or Ray actor): the looked-up tables at their pinned versions, and the
    rows of the last segment (consecutive segments mostly share keys: clips of one source,
    windows of one episode), so a key is not scanned for again segment after segment."""

    def __init__(self, lake: Lake, blobs: BlobMaterializer) -> None:
        self.lake, self.blobs = lake, blobs
        self._open: dict[str, lance.LanceDataset] = {}
        self._last: dict[Lookup, Found] = {}
        self.refreshes = 0  # segments that moved a table to its latest version
        self.scanned = 0  # keys looked for with a filtered scan

    def dataset(self, table: str, pinned: int | None) -> lance.LanceDataset:
        """The table at the version the job pinned (its latest if the job pinned none)."""
        if table not in self._open:
            self._open[table] = self.lake.table(table, version=pinned)
        return self._open[table]

    def columns(
        self, lookup: Lookup, keys: Sequence[Any], pinned: int | None = None
    ) -> dict[str, pa.Array]:
        """``<table>.<column>`` -> one value per key (null where the key is null or unknown)."""
        wanted = [k for k in dict.fromkeys(keys) if k is not None]
        ds = self.dataset(lookup.table, pinned)
        last = self._last.get(lookup)
        need = [k for k in wanted if last is None or k not in last[0]]
        found = self._read(ds, lookup, need)
        missing = [k for k in need if k not in found[0]]
        if missing:
            latest = self.lake.table(lookup.table)
            if latest.version != ds.version:  # rows appended since the pin: one refresh
                self._open[lookup.table] = ds = latest
                self.refreshes += 1
                found = _merge(found, self._read(latest, lookup, missing))
        if last is not None:
            found = _merge(found, last)
        keep = [k for k in wanted if k in found[0]]  # this segment's rows only, for the next
        table = found[1].take(pa.array([found[0][k] for k in keep], pa.int64()))
        index = {k: i for i, k in enumerate(keep)}
        self._last[lookup] = (index, table)
        # dictionary-encoded: a long episode's trajectory looked up by 200 windows is held
        # once, not 200 times; `to_pylist()` and row dicts see plain values
        rows = pa.array([index.get(k) if k is not None else None for k in keys], pa.int32())
        out: dict[str, pa.Array] = {}
        for c in lookup.columns:
            if is_blob(ds.schema.field(c)):
                addrs = table.column(ADDR).to_pylist()
                values = pa.array(self.blobs.paths(lookup.table, c, addrs, ds), pa.string())
            else:
                values = table.column(c).combine_chunks()
            out[f"{lookup.table}.{c}"] = pa.DictionaryArray.from_arrays(rows, values)
        return out

    def _read(self, ds: lance.LanceDataset, lookup: Lookup, keys: list[Any]) -> Found:
        """The rows of `keys` (those found): the lookup's plain columns, and the row addresses
        when it reads a blob column (paths are made at the end: scratch files may be trimmed)."""
        schema = ds.schema
        blobs = any(is_blob(schema.field(c)) for c in lookup.columns)
        plain = [c for c in lookup.columns if not is_blob(schema.field(c))]
        cols = list(dict.fromkeys([lookup.on, *plain]))
        parts = []
        self.scanned += len(keys)
        for i in range(0, len(keys), KEY_CHUNK):
            chunk = ", ".join(sql_literal(k) for k in keys[i : i + KEY_CHUNK])
            parts.append(
                ds.to_table(
                    columns=cols, filter=f"{lookup.on} IN ({chunk})", with_row_address=blobs
                )
            )
        out_schema = pa.schema(
            [schema.field(c) for c in cols] + ([pa.field(ADDR, pa.uint64())] if blobs else [])
        )
        tbl = pa.concat_tables(parts) if parts else out_schema.empty_table()
        index: dict[Any, int] = {}
        for i, k in enumerate(tbl.column(lookup.on).to_pylist()):
            index.setdefault(k, i)  # a key twice in the other table: its first row
        return index, tbl.select(plain + ([ADDR] if blobs else []))


def _merge(a: Found, b: Found) -> Found:
    """The rows of `a`, then those of `b` whose keys `a` lacks."""
    index, table = dict(a[0]), a[1]
    shift = table.num_rows
    for k, i in b[0].items():
        index.setdefault(k, shift + i)
    return index, pa.concat_tables([table, b[1].cast(table.schema)])


def lookup_batch_columns(
    reader: LookupReader,
    lookups: Sequence[Lookup],
    part: pa.RecordBatch,
    pinned: Mapping[str, int],
) -> dict[str, pa.Array]:
    """Every declared lookup's columns for the rows of `part` (which carries the keys)."""
    out: dict[str, pa.Array] = {}
    for lk in lookups:
        out.update(reader.columns(lk, part.column(lk.key).to_pylist(), pinned.get(lk.table)))
    return out
