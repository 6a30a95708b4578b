"""`sila devtable --from L --to D --rows N [--stratify-by COL]`: a small lake that mirrors a big
one: the same schemas (stage columns and their metadata included, so the same pipelines run
unchanged on it), a stratified sample of clips, and the sources those clips come from."""

from __future__ import annotations

import random

import lance
import pyarrow as pa

from sila.errors import SilaError
from sila.schema import is_blob


def stratified_ids(tbl: pa.Table, rows: int, column: str | None, seed: int) -> list[str]:
    """Proportional allocation per stratum (largest remainder), at least one per stratum
    while rows allow; deterministic for a seed."""
    ids = tbl["id"].to_pylist()
    if rows >= len(ids):
        return ids
    rng = random.Random(seed)
    if not column:
        return sorted(rng.sample(ids, rows))
    strata: dict = {}
    for rid, v in zip(ids, tbl[column].to_pylist(), strict=True):
        strata.setdefault(v, []).append(rid)
    n = len(ids)
    quota = {k: rows * len(v) / n for k, v in strata.items()}
    take = {k: int(q) for k, q in quota.items()}
    for k in sorted(strata, key=lambda k: -(quota[k] - take[k])):
        if sum(take.values()) >= rows:
            break
        take[k] += 1
    out = []
    for k in sorted(strata, key=str):
        members = sorted(strata[k])
        out += rng.sample(members, min(len(members), take[k]))
    return sorted(out)


def copy_rows(src: lance.LanceDataset, ids: list[str], dest_uri: str, storage_options=None) -> int:
    """Rows `ids` of `src` (blobs read by address, streamed per batch) into a new table."""
    schema = src.schema
    blobs = [f.name for f in schema if is_blob(f)]
    plain = [f.name for f in schema if f.name not in blobs]
    idset = set(ids)
    tbl = src.to_table(columns=plain, with_row_address=True)
    mask = pa.array([i in idset for i in tbl["id"].to_pylist()])
    tbl = tbl.filter(mask)
    addrs = tbl["_rowaddr"].to_pylist()
    cols = {c: tbl[c] for c in plain}
    for b in blobs:
        data = []
        for addr in addrs:
            blob = src.take_blobs(b, addresses=[addr])[0]
            data.append(blob.read() if blob is not None and blob.size() > 0 else None)
        cols[b] = pa.array(data, pa.large_binary())
    schema = pa.schema([_writable(f) for f in schema])
    out = pa.table([cols[f.name].cast(f.type) for f in schema], schema=schema)
    lance.write_dataset(
        out,
        dest_uri,
        mode="create",
        schema=schema,
        max_rows_per_file=64,
        storage_options=storage_options or None,
    )
    return out.num_rows


def _writable(f: pa.Field) -> pa.Field:
    """The field as Lance takes it on write (a blob column reads back as an extension type)."""
    if is_blob(f):
        meta = {**(f.metadata or {}), b"lance-encoding:blob": b"true"}
        return pa.field(f.name, pa.large_binary(), f.nullable, metadata=meta)
    return f


def make_devtable(
    src_lake,
    dest_lake,
    rows: int,
    *,
    table: str = "clips",
    stratify_by: str | None = None,
    seed: int = 0,
) -> dict:
    if not src_lake.has_table(table):
        raise SilaError(f"lake {src_lake.uri} has no table '{table}'")
    if dest_lake.tables():
        raise SilaError(f"{dest_lake.uri} already has tables: a devtable goes into a new lake")
    ds = src_lake.table(table)
    cols = ["id"] + ([stratify_by] if stratify_by else [])
    if stratify_by and stratify_by not in ds.schema.names:
        raise SilaError(f"{table} has no column '{stratify_by}' to stratify by")
    if "source_id" in ds.schema.names:
        cols.append("source_id")
    meta = ds.to_table(columns=list(dict.fromkeys(cols)))
    chosen = stratified_ids(meta, rows, stratify_by, seed)
    out = {table: copy_rows(ds, chosen, dest_lake.table_uri(table), dest_lake.storage_options)}
    if "source_id" in meta.schema.names and table != "sources" and src_lake.has_table("sources"):
        src_of = dict(zip(meta["id"].to_pylist(), meta["source_id"].to_pylist(), strict=True))
        need = sorted({src_of[i] for i in chosen if src_of.get(i)})
        out["sources"] = copy_rows(
            src_lake.table("sources"),
            need,
            dest_lake.table_uri("sources"),
            dest_lake.storage_options,
        )
    if stratify_by:
        full = meta[stratify_by].value_counts().to_pylist()
        sub = src_lake.table(table)  # proportions in the sample vs the source
        picked = set(chosen)
        sample_vals = [
            v
            for i, v in zip(meta["id"].to_pylist(), meta[stratify_by].to_pylist(), strict=True)
            if i in picked
        ]
        n_all, n_s = meta.num_rows, len(sample_vals)
        out["strata"] = {
            str(d["values"]): {
                "source_share": round(d["counts"] / n_all, 4),
                "sample_share": round(sample_vals.count(d["values"]) / max(1, n_s), 4),
            }
            for d in full
        }
        del sub
    return out
