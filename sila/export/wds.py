"""`sila export wds OUT`: selected clips as WebDataset tar shards, bucketed, deterministic, resumable.

A run first writes its plan (the pinned table version, the selection, which samples go in
which shard) to `OUT/.sila-export/plan.json`; shards are then written one by one (a temporary
name, then renamed) and each finished shard is recorded with its size and SHA-256. A resumed
run reads the plan, skips finished shards and writes the rest, so there are never duplicates
or gaps, and the same inputs give the same bytes: members in a fixed order, zero mtimes and
owners, no timestamps in the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from sila.errors import SilaError
from sila.export.buckets import recipe_buckets
from sila.export.out import Out, remove_export_tmp
from sila.export.select import bucket_dir, pin, resolve_where, sample_key
from sila.export.tar import HashingWriter, add_member, member_ext
from sila.recipe import load_recipe
from sila.schema import is_blob

log = logging.getLogger(__name__)

PLAN = ".sila-export/plan.json"
DONE = ".sila-export/done"
MEDIA_COLUMNS = ("video", "image", "audio", "media")


@dataclass
class ExportOptions:
    """One export: where to, which samples, how big the shards are."""

    out: str
    where: str | None = None
    table: str = "clips"
    recipe: str | None = None
    target_bytes: int = 1_000_000_000
    default_selection: bool = True
    allow_pending: bool = False  # ship only the curated rows when some are not (manifest says)
    embeddings: bool = True
    split_column: str | None = None  # shards under <split>/<bucket>/ (default: "split" if present)
    subset: str | None = None  # mixture subset name (its own shard set)
    storage_options: dict[str, str] = field(default_factory=dict)


@dataclass
class Shard:
    name: str  # "<split>/<bucket>/part-000000.tar" (relative to OUT)
    bucket: str
    split: str
    ids: list[str]
    keys: list[str]


def _media_column(schema) -> str | None:
    for name in MEDIA_COLUMNS:
        if name in schema.names and is_blob(schema.field(name)):
            return name
    return None


def plan_export(lake, opts: ExportOptions) -> dict:
    """Select, bucket and pack: the plan a run (and every resume of it) follows."""
    ds = lake.table(opts.table)
    where = resolve_where(ds.schema, opts.where, opts.default_selection)
    names = set(ds.schema.names)
    split_col = opts.split_column or ("split" if "split" in names else None)
    if split_col and split_col not in names:
        raise SilaError(f"split column '{split_col}' is not in {opts.table}")
    if split_col and opts.default_selection:  # a clip with no split yet is in no split
        where = f"{where} AND {split_col} IS NOT NULL" if where else f"{split_col} IS NOT NULL"
    want = [
        c
        for c in (
            "id",
            "source_id",
            "video_width",
            "video_height",
            "video_duration_s",
            "video_bytes",
            "width",
            "height",
            "duration_s",
        )
        if c in names
    ]
    if split_col:
        want.append(split_col)
    try:
        tbl = ds.to_table(columns=want, filter=where)
    except (ValueError, OSError, RuntimeError) as e:
        raise SilaError(f"export selection {where!r} failed on {opts.table}: {e}") from e
    buckets = recipe_buckets(load_recipe(opts.recipe))
    rows = tbl.to_pylist()
    for r in rows:
        w = r.get("video_width") or r.get("width")
        h = r.get("video_height") or r.get("height")
        d = (
            r.get("video_duration_s")
            if r.get("video_duration_s") is not None
            else r.get("duration_s")
        )
        r["_bucket"] = bucket_dir(buckets.key(w, h, d))
        r["_split"] = str(r.get(split_col) or "train") if split_col else "train"
        r["_bytes"] = int(r.get("video_bytes") or 0) + 2048
    rows.sort(key=lambda r: (r["_split"], r["_bucket"], r["id"]))
    used: dict[str, str] = {}
    shards: list[Shard] = []
    cur: Shard | None = None
    size = 0
    for r in rows:
        group = (r["_split"], r["_bucket"])
        if (
            cur is None
            or (cur.split, cur.bucket) != group
            or size + r["_bytes"] > opts.target_bytes
            and cur.ids
        ):
            n = sum(1 for s in shards if (s.split, s.bucket) == group)
            prefix = f"{opts.subset}/" if opts.subset else ""
            split_dir = f"{r['_split']}/" if split_col else ""
            name = f"{prefix}{split_dir}{r['_bucket']}/part-{n:06d}.tar"
            cur = Shard(name, r["_bucket"], r["_split"], [], [])
            shards.append(cur)
            size = 0
        cur.ids.append(r["id"])
        cur.keys.append(sample_key(r["id"], used))
        size += r["_bytes"]
    config = {
        "table": opts.table,
        "where": where,
        "target_bytes": opts.target_bytes,
        "embeddings": opts.embeddings,
        "split_column": split_col,
        "subset": opts.subset,
        "buckets": asdict(buckets) | {"_ratios": None},
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "format": "sila-wds/1",
        "config": config,
        "config_hash": digest[:16],
        "table_version": ds.version,
        "tag": f"export-{digest[:12]}",
        "shards": [asdict(s) for s in shards],
        "source_ids": sorted({r.get("source_id") for r in rows if r.get("source_id")}),
    }


def run_export(lake, opts: ExportOptions, *, progress=None) -> dict:
    """Write (or finish) the export; returns the manifest."""
    out = Out(opts.out, opts.storage_options or lake.storage_options)
    if not out.remote:
        remove_export_tmp(opts.out)  # a killed run's partial shard, never renamed into place
    fresh = plan_export(lake, opts)
    state = f"{opts.subset}/" if opts.subset else ""
    raw = out.read(state + PLAN)
    plan = json.loads(raw) if raw else None
    if plan and plan["config_hash"] != fresh["config_hash"]:
        raise SilaError(
            f"{opts.out} holds another export (other selection or settings); choose another "
            "output folder or remove it"
        )
    ds = lake.table(opts.table, version=(plan or fresh)["table_version"])
    pending = _check_curated(lake, ds, opts, (plan or fresh)["config"])  # before any plan is kept
    if plan is None:
        plan = fresh
        out.put(state + PLAN, json.dumps(plan, indent=1, sort_keys=True).encode())
    pinned = pin(lake.table(opts.table), opts.table, plan["tag"], plan["table_version"])
    media = _media_column(ds.schema)
    t0 = time.monotonic()
    written = reused = 0
    records = []
    for s in plan["shards"]:
        key = f"{state}{DONE}/{s['name'].replace('/', '__')}.json"
        done = out.read(key)
        if done:
            records.append(json.loads(done))
            reused += 1
            continue
        rec = _write_shard(ds, Shard(**s), media, opts, out)
        out.put(key, json.dumps(rec, sort_keys=True).encode())
        records.append(rec)
        written += 1
        if progress:
            progress(s["name"], rec)
    manifest = _manifest(plan, records, pinned)
    from sila.export.select import random_weight_warnings

    manifest["warnings"] = random_weight_warnings(ds.schema, plan["config"]["where"])
    if pending:
        manifest["pending"] = pending
        manifest["warnings"].append(
            "exported with --allow-pending: "
            + ", ".join(f"{p['stage']} ({p['rows']} rows)" for p in pending["stages"])
            + " not computed; those rows are left out"
        )
    out.put(state + "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
    from sila.export.energon import write_energon_meta

    write_energon_meta(out, plan, records)
    seconds = time.monotonic() - t0
    lake.store.put(
        f"exports/{plan['tag']}.json",
        json.dumps(
            {
                "out": opts.out,
                "tag": plan["tag"],
                "at": time.time(),
                "source_ids": plan["source_ids"],
                "manifest": manifest,
            },
            default=str,
        ).encode(),
    )
    return manifest | {
        "run": {"shards_written": written, "shards_reused": reused, "seconds": round(seconds, 2)}
    }


def _check_curated(lake, ds, opts: ExportOptions, config: dict) -> dict | None:
    """Refuse an export whose selection reads stages with rows not computed yet (see
    `sila.export.pending`); with `allow_pending`, what the manifest records instead."""
    from sila.export.pending import check_curated, referenced_stages
    from sila.export.select import pictures_only

    extra = [config["split_column"]] if config["split_column"] else []
    stages = referenced_stages(ds.schema, config["where"], extra)
    if not stages:
        return None
    # the rows the export would judge: the user's where, unless it reads a decision itself
    # (a null decision would hide exactly the rows to count)
    base = pictures_only(ds.schema)
    if opts.where and not referenced_stages(ds.schema, opts.where):
        base.append(f"({opts.where})")
    return check_curated(lake, ds, stages, " AND ".join(base) or None, opts.allow_pending)


def _json_value(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _write_shard(ds, shard: Shard, media: str | None, opts: ExportOptions, out: Out) -> dict:
    """One tar: members `<key>.<ext>` in a fixed order, offsets recorded for Energon."""
    schema = ds.schema
    vec_cols = [
        f.name
        for f in schema
        if pa.types.is_fixed_size_list(f.type) and (opts.embeddings or f.name != "embedding")
    ]
    meta_cols = [
        f.name
        for f in schema
        if not is_blob(f)
        and f.name not in vec_cols
        and not pa.types.is_binary(f.type)
        and not pa.types.is_large_binary(f.type)
    ]
    quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in shard.ids)
    tbl = ds.to_table(
        columns=meta_cols + vec_cols, filter=f"id IN ({quoted})", with_row_address=True
    )
    by_id = {r["id"]: r for r in tbl.to_pylist()}
    fd, tmp = tempfile.mkstemp(suffix=".tar", dir=out.tmpdir(), prefix=".tmp-")
    os.close(fd)
    h = hashlib.sha256()
    samples = []
    addrs = [by_id[i]["_rowaddr"] for i in shard.ids if i in by_id]
    blobs = dict(zip(addrs, ds.take_blobs(media, addresses=addrs), strict=True)) if media else {}
    with (
        open(tmp, "wb") as raw,
        tarfile.open(
            fileobj=HashingWriter(raw, h), mode="w", format=tarfile.GNU_FORMAT, copybufsize=1 << 22
        ) as tar,
    ):
        for sid, key in zip(shard.ids, shard.keys, strict=True):
            row = by_id.get(sid)
            if row is None:
                raise SilaError(f"sample {sid} vanished from pinned version {ds.version}")
            start = tar.offset
            parts = []
            addr = row.pop("_rowaddr")
            if media:
                blob = blobs.pop(addr, None)
                if blob is not None and blob.size() > 0:
                    with blob as f:
                        head = f.read(16)
                        f.seek(0)
                        parts.append(add_member(tar, f"{key}.{member_ext(head)}", f, blob.size()))
            for c in vec_cols:
                if row.get(c) is not None:
                    buf = io.BytesIO()
                    np.save(buf, np.asarray(row.pop(c), dtype=np.float32), allow_pickle=False)
                    data = buf.getvalue()
                    parts.append(add_member(tar, f"{key}.{c}.npy", io.BytesIO(data), len(data)))
                else:
                    row.pop(c, None)
            meta = {k: _json_value(v) for k, v in row.items()}
            if isinstance(meta.get("caption_json"), str):
                try:
                    meta["caption"] = json.loads(meta.pop("caption_json"))
                except ValueError:
                    pass
            data = json.dumps(meta, sort_keys=True, default=str).encode()
            parts.append(add_member(tar, f"{key}.json", io.BytesIO(data), len(data)))
            samples.append(
                {"key": key, "id": sid, "offset": start, "size": tar.offset - start, "parts": parts}
            )
        end = tar.offset
    with open(tmp, "rb+") as f:  # durable before it is renamed into place
        os.fsync(f.fileno())
    size = os.path.getsize(tmp)
    out.put_file(shard.name, Path(tmp))
    return {
        "name": shard.name,
        "bucket": shard.bucket,
        "split": shard.split,
        "samples": samples,
        "count": len(samples),
        "bytes": size,
        "end": end,
        "sha256": h.hexdigest(),
    }


def _manifest(plan: dict, records: list[dict], pinned) -> dict:
    buckets: dict[str, dict] = {}
    for r in records:
        name = f"{r['split']}/{r['bucket']}" if plan["config"]["split_column"] else r["bucket"]
        b = buckets.setdefault(name, {"shards": [], "samples": 0, "bytes": 0})
        b["shards"].append(r["name"])
        b["samples"] += r["count"]
        b["bytes"] += r["bytes"]
    from sila import __version__

    return {
        "format": plan["format"],
        "selection": plan["config"]["where"],
        "config": plan["config"],
        "tables": {pinned.table: {"version": pinned.version, "tag": pinned.tag}},
        "code_version": __version__,
        "buckets": buckets,
        "samples": sum(r["count"] for r in records),
        "bytes": sum(r["bytes"] for r in records),
        "shards": [
            {"name": r["name"], "samples": r["count"], "bytes": r["bytes"], "sha256": r["sha256"]}
            for r in records
        ],
    }
