"""Which samples an export ships: the default selection, pinned table versions, sample keys.

The default selection is "kept by every video filter that ran, the dedup representative,
captioned when captions exist, with media": it is resolved from the columns the table has
now, so a filter never run gates nothing, and written into the manifest as plain SQL. A
decision the filter has not computed for a row (null) is not "keep"; `sila.export.pending`
refuses an export whose selection has such rows. Audio-only clips never go into video shards,
whatever the selection.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import lance

from sila.errors import SilaError
from sila.schema import owner

# Decisions about the picture gate an export; `audio_keep` only says which audio to ship.
NOT_GATING = {"audio_keep"}
KEY_MAX = 100  # WebDataset's ShardWriter cuts keys over 128; ustar names must fit in 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def default_where(schema) -> list[str]:
    """The default selection's conditions for a table with `schema`."""
    names = set(schema.names)
    out = []
    for f in schema:
        if f.name.endswith("_keep") and f.name not in NOT_GATING and owner(f):
            out.append(f"{f.name} = true")
    if "caption_json" in names:
        out.append("caption_json IS NOT NULL")
    if "video_bytes" in names:
        out.append("video_bytes > 0")
    return out


def pictures_only(schema) -> list[str]:
    """The condition that keeps audio-only clips out of video shards (where clips say their kind)."""
    return ["(clip_kind IS NULL OR clip_kind <> 'audio')"] if "clip_kind" in schema.names else []


def resolve_where(schema, where: str | None, use_default: bool = True) -> str | None:
    """The export's SQL: pictures only, the default selection (unless `--all`), and `where`."""
    parts = pictures_only(schema) + (default_where(schema) if use_default else [])
    if where:
        parts.append(f"({where})")
    return " AND ".join(parts) or None


def sample_key(sample_id: str, used: dict[str, str]) -> str:
    """A WebDataset key for `sample_id`: only [A-Za-z0-9_-] (a dot would start the extension),
    at most KEY_MAX characters, unique within one export (a hash suffix settles clashes)."""
    key = _UNSAFE.sub("_", sample_id).strip("_") or "sample"
    digest = hashlib.sha1(sample_id.encode()).hexdigest()[:16]
    if len(key) > KEY_MAX:
        key = f"{key[: KEY_MAX - 17]}_{digest}"
    if used.get(key, sample_id) != sample_id:
        key = f"{key[: KEY_MAX - 17]}_{digest}"
    used[key] = sample_id
    return key


def bucket_dir(labels: tuple[str | None, ...]) -> str:
    parts = [_UNSAFE.sub("_", (x or "unknown").replace(":", "x").replace(".", "_")) for x in labels]
    return "_".join(parts)


@dataclass
class Pinned:
    """A table version an export read, kept from cleanup by a Lance tag."""

    table: str
    version: int
    tag: str


def pin(ds: lance.LanceDataset, table: str, tag: str, version: int | None = None) -> Pinned:
    version = version or ds.version
    tags = ds.tags.list()
    try:
        if tag not in tags:
            ds.tags.create(tag, version)
        elif tags[tag]["version"] != version:
            ds.tags.update(tag, version)
    except (ValueError, OSError, RuntimeError) as e:
        raise SilaError(f"could not tag {table} version {version} as '{tag}': {e}") from e
    return Pinned(table, version, tag)


@dataclass
class Selection:
    table: str
    version: int
    where: str | None
    rows: list[dict] = field(default_factory=list)  # id, bucket, est_bytes, split, source_id


def random_weight_warnings(schema, where: str | None) -> list[str]:
    """Columns computed with RANDOM weights that the selection depends on (or ships)."""
    out = []
    seen = set()
    for f in schema:
        meta = f.metadata or {}
        stage = meta.get(b"sila.stage", b"").decode()
        if meta.get(b"sila.random_weights") == b"true" and stage and stage not in seen:
            seen.add(stage)
            used = f" (the selection uses {f.name})" if where and f.name in where else ""
            out.append(
                f"'{stage}' ran with RANDOM weights{used}: its values test the mechanics only; "
                f"recompute it with real weights before training on this export"
            )
    return out
