"""Read-only access to the lake for the viewer pages: metadata, pages of rows, single blobs.

Only reads: datasets are opened by URI (never through a writer), rows come from `to_table` with
a projection that never names a blob column, media bytes come from `take_blobs` for one row at
a time, and coverage comes from fragment metadata. Results are cached per table version, so a
page that reruns after a widget change reads nothing new.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import lance
import pyarrow as pa
import pyarrow.compute as pc
import streamlit as st

from sila.lake import Lake
from sila.schema import MODEL_KEY, is_blob, owner, version_of

log = logging.getLogger(__name__)

LAKE_ENV = "SILA_VIEW_LAKE"
RECIPE_ENV = "SILA_VIEW_RECIPE"
MAX_PLAY_BYTES = 256 * 1024 * 1024  # larger media are not sent to the browser whole
LIVE_TTL = 3.0  # seconds a dataset handle / lease list is reused: pages stay live, cheaply
STATUS_TTL = 10.0  # the full status counts error rows and decisions (column scans): less often


# -- the lake and its tables ------------------------------------------------------------------
def lake_uri() -> str:
    return os.environ.get(LAKE_ENV) or os.environ.get("SILA_LAKE") or "./lake"


@st.cache_resource(show_spinner=False, max_entries=8)
def _lake(uri: str, options: str) -> Lake:
    import json

    return Lake(uri, storage_options=json.loads(options or "{}") or None)


def lake() -> Lake:
    return _lake(lake_uri(), os.environ.get("SILA_VIEW_STORAGE_OPTIONS") or "")


@st.cache_data(ttl=LIVE_TTL, show_spinner=False, max_entries=8)
def _tables(uri: str) -> list[str]:
    return lake().tables()


def tables() -> list[str]:
    return _tables(lake_uri())


@st.cache_resource(ttl=LIVE_TTL, show_spinner=False, max_entries=64)
def _dataset(uri: str, table: str) -> lance.LanceDataset:
    return lake().table(table)


def dataset(table: str) -> lance.LanceDataset:
    """The latest committed version of a table (re-read at most every LIVE_TTL seconds)."""
    return _dataset(lake_uri(), table)


def version(table: str) -> int:
    return dataset(table).version


# -- columns and who wrote them ---------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    type: str
    stage: str | None  # owner from field metadata `sila.stage`; None for base columns
    version: str | None
    model: str | None
    kind: str  # media | image | error | decision | reasons | tags | caption | embedding | number | text | other
    facts: tuple[tuple[str, str], ...] = ()  # every `sila.*` field metadata entry

    @property
    def group(self) -> str:
        return self.stage or "base"

    @property
    def random_weights(self) -> bool:
        return dict(self.facts).get("sila.random_weights", "").lower() == "true"


def _kind(f: pa.Field) -> str:
    t = f.type
    if is_blob(f):
        return "media"
    if f.name.endswith("_error"):
        return "error"
    if f.name.endswith("_keep") and pa.types.is_boolean(t):
        return "decision"
    if "caption" in f.name and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return "caption"
    if "caption" in f.name and pa.types.is_struct(t):
        return "caption"
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        vt = t.value_type
        if pa.types.is_string(vt) or pa.types.is_large_string(vt):
            return "reasons" if f.name.endswith("_reasons") else "tags"
        if pa.types.is_floating(vt) and (
            "embed" in f.name or (pa.types.is_fixed_size_list(t) and t.list_size >= 16)
        ):
            return "embedding"
        return "other"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "image"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    return "other"


def columns_of(schema: pa.Schema) -> list[Column]:
    out = []
    for f in schema:
        meta = f.metadata or {}
        model = meta.get(MODEL_KEY)
        facts = tuple(
            (k.decode(), v.decode(errors="replace"))
            for k, v in sorted(meta.items())
            if k.startswith(b"sila.")
        )
        out.append(
            Column(
                f.name,
                str(f.type),
                owner(f),
                version_of(f),
                model.decode() if model else None,
                _kind(f),
                facts,
            )
        )
    return out


def columns(table: str) -> list[Column]:
    return columns_of(dataset(table).schema)


def plain_columns(table: str) -> list[str]:
    """Columns cheap to read for many rows: everything but blobs and embeddings."""
    return [c.name for c in columns(table) if c.kind not in ("media", "embedding")]


def has_column(table: str, name: str) -> bool:
    return table in tables() and name in dataset(table).schema.names


# -- rows -------------------------------------------------------------------------------------
class QueryError(ValueError):
    """A `where` the user typed that Lance refused: shown next to the box, never a trace."""


def _safe_columns(table: str, wanted: list[str]) -> list[str]:
    blobs = {c.name for c in columns(table) if c.kind == "media"}
    names = set(dataset(table).schema.names)
    return [c for c in dict.fromkeys(wanted) if c in names and c not in blobs]


@st.cache_data(show_spinner=False, max_entries=256)
def _count(uri: str, table: str, ver: int, where: str | None) -> int:
    ds = lake().table(table, version=ver)
    try:
        return ds.count_rows(filter=where or None)
    except Exception as e:  # noqa: BLE001 - Lance raises several types for a bad predicate
        raise QueryError(str(e).splitlines()[0]) from None


def count(table: str, where: str | None = None) -> int:
    return _count(lake_uri(), table, version(table), (where or "").strip() or None)


@st.cache_data(show_spinner=False, max_entries=256)
def _rows(
    uri: str,
    table: str,
    ver: int,
    cols: tuple[str, ...],
    where: str | None,
    offset: int,
    limit: int,
) -> pa.Table:
    ds = lake().table(table, version=ver)
    try:
        return ds.to_table(
            columns=list(cols), filter=where, offset=offset, limit=limit, with_row_id=True
        )
    except Exception as e:  # noqa: BLE001
        raise QueryError(str(e).splitlines()[0]) from None


def rows(
    table: str, cols: list[str], where: str | None = None, offset: int = 0, limit: int = 24
) -> pa.Table:
    """One page of rows (plus `_rowid`) matching `where`; blob columns are never read."""
    where = (where or "").strip() or None
    return _rows(
        lake_uri(), table, version(table), tuple(_safe_columns(table, cols)), where, offset, limit
    )


@st.cache_data(show_spinner=False, max_entries=64)
def _matching_row_ids(uri: str, table: str, ver: int, where: str) -> pa.Array:
    ds = lake().table(table, version=ver)
    try:  # reads only the columns the predicate names, plus row ids
        return ds.to_table(columns=[], filter=where, with_row_id=True)["_rowid"].combine_chunks()
    except Exception as e:  # noqa: BLE001
        raise QueryError(str(e).splitlines()[0]) from None


def random_rows(table: str, cols: list[str], where: str | None, n: int, seed: int) -> pa.Table:
    """`n` random rows matching `where` (fixed by `seed`), by Lance random access."""
    ds = dataset(table)
    cols = _safe_columns(table, cols)
    where = (where or "").strip() or None
    rng = random.Random(seed)
    if where is None:
        total = ds.count_rows()
        picks = sorted(rng.sample(range(total), min(n, total)))
        return ds.take(picks, columns=[*cols, "_rowid"])
    ids = _matching_row_ids(lake_uri(), table, version(table), where)
    picks = sorted(rng.sample(range(len(ids)), min(n, len(ids))))
    chosen = pc.take(ids, pa.array(picks, pa.int64())) if picks else pa.array([], pa.uint64())
    return take_rows(table, chosen.to_pylist(), cols)


def take_rows(table: str, row_ids: list[int], cols: list[str]) -> pa.Table:
    """The rows with these row ids (plus `_rowid`), in the order given; blobs never read."""
    ds = dataset(table)
    cols = _safe_columns(table, cols)
    if not row_ids:
        return pa.table({c: pa.array([], ds.schema.field(c).type) for c in cols}).append_column(
            "_rowid", pa.array([], pa.uint64())
        )
    # a `_rowid IN (...)` filter reads only the matching rows (public API, no private take)
    where = "_rowid IN (" + ", ".join(str(int(r)) for r in row_ids) + ")"
    got = ds.to_table(columns=cols, filter=where, with_row_id=True)
    at = {r: i for i, r in enumerate(got["_rowid"].to_pylist())}
    order = [at[r] for r in row_ids if r in at]  # the caller's order
    return got.take(pa.array(order, pa.int64()))


def quote(value: str) -> str:
    """A SQL string literal (for ids in predicates)."""
    return "'" + str(value).replace("'", "''") + "'"


@st.cache_data(show_spinner=False, max_entries=512)
def _row(uri: str, table: str, ver: int, row_id: str) -> dict | None:
    ds = lake().table(table, version=ver)
    cols = [
        f.name
        for f in ds.schema
        if not is_blob(f) and _kind(f) != "embedding"  # embeddings are read on their own
    ]
    t = ds.to_table(columns=cols, filter=f"id = {quote(row_id)}", with_row_id=True, limit=1)
    return t.to_pylist()[0] if t.num_rows else None


def row(table: str, row_id: str) -> dict | None:
    """Every non-blob column of one row by its id (and `_rowid`)."""
    return _row(lake_uri(), table, version(table), row_id)


def rows_by_ids(table: str, ids: list[str], cols: list[str]) -> pa.Table:
    if not ids:
        return pa.table({"id": pa.array([], pa.string())})
    where = "id IN (" + ", ".join(quote(i) for i in ids) + ")"
    return rows(table, ["id", *cols], where, 0, len(ids))


@dataclass(frozen=True)
class Blob:
    size: int
    data: bytes | None  # None when larger than the limit


def blob(table: str, column: str, row_id: int, max_bytes: int = MAX_PLAY_BYTES) -> Blob | None:
    """One row's media bytes by Lance random access (`take_blobs`): one blob, never a column."""
    files = dataset(table).take_blobs(column, ids=[int(row_id)])
    f = files[0] if files else None
    if f is None:
        return None
    size = f.size()
    if size == 0:
        return None
    if size > max_bytes:
        return Blob(size, None)
    with f:
        return Blob(size, f.readall())


# -- small helpers shared by pages ------------------------------------------------------------
def stage_hint(column: str | None, table: str | None = None) -> str:
    """The command that would produce a missing column (or, with column None, a table)."""
    from sila.viewer.hints import command_for

    return command_for(column, table, lake_uri())


def to_display(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return f"<{len(value):,} bytes>"
    return value


def columns_owner(table: str, column: str) -> str | None:
    return next((c.stage for c in columns(table) if c.name == column), None)


def table_stages(table: str) -> list[str]:
    """Stages that ran ON this table (they own `<stage>_error` there), not the explode stage
    that created its rows: the same rule `sila status` uses."""
    names = set(dataset(table).schema.names)
    return list(
        dict.fromkeys(c.stage for c in columns(table) if c.stage and f"{c.stage}_error" in names)
    )
