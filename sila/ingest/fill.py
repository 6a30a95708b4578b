"""Manifest fields for content already in the lake: empty `meta_*` cells of the existing row are
filled in place; a cell that already holds another value keeps it (the caller reports it).

The fill rewrites only the touched `meta_*` columns of the touched fragments
(`LanceFragment.update_columns` + one `Update` commit): rows keep their fragment and their ids,
and a source's bytes and stage columns are never rewritten.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lance
import pyarrow as pa
import pyarrow.compute as pc
from lance import LanceOperation
from lance.commit import CommitConflictError

from sila.errors import LakeError
from sila.lake import Lake

log = logging.getLogger(__name__)

ATTEMPTS = 20


def split_meta(
    meta: dict[str, Any], stored: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(cells to fill: the row holds null there, cells that differ from a stored value)."""
    fill = {k: v for k, v in meta.items() if v is not None and k not in stored}
    differ = {k: v for k, v in meta.items() if v is not None and k in stored and stored[k] != v}
    return fill, differ


def fill_meta(lake: Lake, fills: dict[str, dict[str, Any]]) -> int:
    """Write `fills` ({id: {meta column: value}}) into `sources`; returns the rows changed.
    Retries on a commit conflict (a stage committing its columns meanwhile)."""
    if not fills:
        return 0
    cols = sorted({c for f in fills.values() for c in f})
    for attempt in range(ATTEMPTS):
        ds = lake.table("sources")
        updated, fields, changed = _rewrite(ds, fills, cols)
        if not updated:
            return 0
        try:
            lance.LanceDataset.commit(
                ds,
                LanceOperation.Update(
                    updated_fragments=updated,
                    fields_modified=fields,
                ),
                read_version=ds.version,
                storage_options=lake.storage_options or None,
            )
            return changed
        except CommitConflictError as e:
            log.info("meta fill conflict (attempt %d): %s", attempt + 1, str(e).split(",")[0])
            time.sleep(min(0.05 * 2**attempt, 1.0))
    raise LakeError(f"could not fill manifest fields of {len(fills)} source(s) (commit conflicts)")


def _rewrite(
    ds: lance.LanceDataset, fills: dict[str, dict[str, Any]], cols: list[str]
) -> tuple[list, list[int], int]:
    """New column files for every fragment holding a filled id:
    (fragment metadatas, field ids modified, rows changed)."""
    ids = pa.array(list(fills), pa.string())
    schema = pa.schema([ds.schema.field("id"), *[ds.schema.field(c) for c in cols]])
    updated: list = []
    fields: set[int] = set()
    changed = 0
    for frag in ds.get_fragments():
        t = frag.to_table(columns=["id", *cols], filter=pc.field("id").isin(ids))
        if not t.num_rows:
            continue
        rows = t.to_pylist()
        for r in rows:  # a stored value wins over the manifest's, even one set meanwhile
            for c, v in fills[r["id"]].items():
                if r[c] is None:
                    r[c] = v
        meta, modified = frag.update_columns(
            pa.Table.from_pylist(rows, schema=schema), left_on="id", right_on="id"
        )
        fields.update(modified)
        updated.append(meta)
        changed += len(rows)
    return updated, sorted(fields), changed
