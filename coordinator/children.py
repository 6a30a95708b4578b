"""Child rows of an explode stage (e.g. the clips of a source): replaced per parent, atomically.

When an explode stage has computed some parents, their children are *replaced* in ONE Lance
commit (`LanceOperation.Update`): children the new run no longer produces are deleted (with the
downstream columns they carried), new ones are added, and a child whose id is unchanged keeps
its row and every downstream output (transcode, embeddings...). So a re-split with other
settings never leaves clips of an abandoned split beside the new ones, and a re-run after a
crash adds nothing twice.

New children go in fragments of at most `child_rows_per_fragment` rows (a stage attribute,
default 64), so downstream stages get parallel work and bounded fragments (a transcode worker
holds one fragment's outputs). A fragment holds two data files: the stage's stable child fields,
and its `child_mutable_fields` (e.g. `clip_index`, scores) that a re-run may change for a kept
child; those are rewritten in the same commit, without touching downstream columns.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time

import lance
import numpy as np
import pyarrow as pa
from lance import LanceOperation
from lance.commit import CommitConflictError

from sila.errors import ContractError
from sila.lake import Lake
from sila.schema import owned

log = logging.getLogger(__name__)

ADDR = "_rowaddr"
ATTEMPTS = 20


def child_schema(stage_cls) -> pa.Schema:
    return pa.schema(
        owned(stage_cls.child_fields, stage_cls.name, stage_cls.resolved_version(), stage_cls.model)
    )


def _conform(stage_cls, children: pa.Table | None) -> pa.Table:
    schema = child_schema(stage_cls)
    if children is None:
        return schema.empty_table()
    try:
        children = children.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
        raise ContractError(
            f"stage '{stage_cls.name}': child rows do not match child_fields {schema.names}: {e}"
        ) from e
    if children.column("id").null_count:
        raise ContractError(f"stage '{stage_cls.name}': every child row needs an id")
    return children


def append_children(
    lake: Lake, stage_cls, children: pa.Table | None, parents: list[str] | None = None
) -> int:
    """Make `parents`' children exactly `children` in one commit; returns the rows added.

    `parents` are the ids of the parent rows just computed (also those that produced no child:
    their old children go). Without it, the parents are those named by the children."""
    children = _conform(stage_cls, children)
    key = stage_cls.child_parent_key
    if key not in children.schema.names:  # no parent column: children are only ever added
        key, parents = "id", children.column("id").to_pylist()
    elif parents is None:
        parents = children.column(key).unique().to_pylist()
    parents = sorted({p for p in parents if p is not None})
    if not parents and not children.num_rows:
        return 0
    name = stage_cls.child_table
    for attempt in range(ATTEMPTS):
        if not lake.has_table(name):
            try:
                lake.create_table(name, child_schema(stage_cls))
            except (OSError, ValueError):
                pass  # someone created it first
        try:
            return _replace(lake, lake.table(name), stage_cls, key, parents, children)
        except CommitConflictError as e:  # another commit touched one of our fragments
            log.debug("children of %s: commit conflict (%s); retrying", name, e)
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise ContractError(f"could not commit children to '{name}' after {ATTEMPTS} conflicts")


def _quote(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _replace(lake: Lake, ds, stage_cls, key: str, parents: list[str], children: pa.Table) -> int:
    names = children.schema.names
    mutable = [n for n in stage_cls.child_mutable_fields if n in names]
    old = (
        ds.to_table(
            columns=["id", *mutable], filter=f"{key} IN ({_quote(parents)})", with_row_address=True
        )
        if parents
        else pa.table({"id": pa.array([], pa.string()), ADDR: pa.array([], pa.uint64())})
    )
    new_ids = children.column("id").to_pylist()
    new_at = {cid: i for i, cid in enumerate(new_ids)}
    old_ids = old.column("id").to_pylist()
    addrs = old.column(ADDR).to_numpy()
    deletes: dict[int, list[str]] = {}
    patches: dict[int, dict[int, int]] = {}  # fragment -> {physical offset: index in children}
    for i, cid in enumerate(old_ids):
        frag = int(addrs[i]) >> 32
        if cid not in new_at:
            deletes.setdefault(frag, []).append(cid)
        elif mutable and any(
            old.column(m)[i].as_py() != children.column(m)[new_at[cid]].as_py() for m in mutable
        ):
            patches.setdefault(frag, {})[int(addrs[i]) & 0xFFFFFFFF] = new_at[cid]
    present = set(old_ids)
    fresh = children.filter(pa.array([cid not in present for cid in new_ids], pa.bool_()))
    removed, updated = [], []
    for frag_id in sorted(set(deletes) | set(patches)):
        meta = _update_fragment(
            ds, frag_id, deletes.get(frag_id, []), patches.get(frag_id, {}), children, mutable
        )
        if meta is None:
            removed.append(frag_id)
        else:
            updated.append(meta)
    added = _new_fragments(ds, stage_cls, fresh, mutable)
    if not (removed or updated or added):
        return 0
    lance.LanceDataset.commit(
        ds.uri,
        LanceOperation.Update(
            removed_fragment_ids=removed, updated_fragments=updated, new_fragments=added
        ),
        read_version=ds.version,
        storage_options=lake.storage_options or None,
    )
    log.info(
        "%s: %d children added, %d removed, %d kept (%d re-indexed) for %d parents",
        stage_cls.child_table,
        fresh.num_rows,
        sum(map(len, deletes.values())),
        len(present) - sum(map(len, deletes.values())),
        sum(map(len, patches.values())),
        len(parents),
    )
    return fresh.num_rows


def _update_fragment(ds, frag_id, delete_ids, patch, children, mutable):
    """The fragment's metadata after deleting `delete_ids` and patching mutable fields."""
    frag = ds.get_fragment(frag_id)
    meta = frag.delete(f"id IN ({_quote(delete_ids)})") if delete_ids else frag.metadata
    if meta is None or not patch:
        return meta
    schema = pa.schema([ds.schema.field(m) for m in mutable])
    want = sorted(_leaf_ids(ds, mutable))
    target = [d for d in meta.files if sorted(d.fields) == want]
    if not target:  # children written before mutable fields had their own file: keep as is
        log.debug("fragment %d: no separate file for %s; kept rows keep them", frag_id, mutable)
        return meta
    live = frag.to_table(columns=mutable, with_row_address=True)
    offsets = (live.column(ADDR).to_numpy() & 0xFFFFFFFF).astype(np.int64)
    n = meta.physical_rows
    cols = []
    for m in mutable:
        values: list = [None] * n
        for off, v in zip(offsets, live.column(m).to_pylist(), strict=True):
            values[off] = v
        for off, idx in patch.items():
            values[off] = children.column(m)[idx].as_py()
        cols.append(pa.array(values, schema.field(m).type))
    file = lance.fragment.write_fragments(
        pa.Table.from_arrays(cols, schema=schema), ds, schema=schema
    )[0].files[0]
    files = [file if d.path == target[0].path else d for d in meta.files]  # in place: see below
    return dataclasses.replace(meta, files=files)


def _leaf_ids(ds, names: list[str]) -> list[int]:
    """Field ids a data file lists for these columns (the innermost ids of nested ones)."""

    def leaves(f) -> list[int]:
        kids = f.children()
        return [i for c in kids for i in leaves(c)] if kids else [f.id()]

    by_name = {f.name(): f for f in ds.lance_schema.fields()}
    return [i for n in names for i in leaves(by_name[n])]


def _new_fragments(ds, stage_cls, rows: pa.Table, mutable: list[str]) -> list:
    """`rows` as fragments of at most `child_rows_per_fragment` rows, two data files each."""
    if not rows.num_rows:
        return []
    cap = int(stage_cls.child_rows_per_fragment)
    stable = [n for n in rows.schema.names if n not in mutable]
    # The stable file goes first: a fragment's identity is its first data file, and a
    # downstream stage's staleness check keys on the first file holding the upstream stage's
    # columns: both must stay put when a kept clip is re-indexed (its transcode is not stale).
    groups = [stable, mutable] if mutable else [stable]
    schemas = [pa.schema([ds.schema.field(n) for n in g]) for g in groups]
    out = []
    for start in range(0, rows.num_rows, cap):
        chunk = rows.slice(start, cap)
        parts = [
            lance.fragment.write_fragments(chunk.select(s.names).cast(s), ds, schema=s)[0]
            for s in schemas
        ]
        out.append(dataclasses.replace(parts[0], files=[f for p in parts for f in p.files]))
    return out
