"""Table schemas and the column registry: who owns which column, at which version.

Ownership lives in Arrow field metadata (`sila.stage`, `sila.stage_version`, `sila.model`), so
the table itself is the registry: any reader of the Lance dataset can tell who wrote a column.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from sila.errors import ContractError

STAGE_KEY = b"sila.stage"
VERSION_KEY = b"sila.stage_version"
MODEL_KEY = b"sila.model"
SPEC_KEY = b"sila.spec"  # how to find the stage again: registered name, file:Class or module:Class
BLOB_META = {b"lance-encoding:blob": b"true"}

INGEST = "ingest"


def blob_field(name: str) -> pa.Field:
    """A media column stored out of line (read lazily), as Lance blob encoding."""
    return pa.field(name, pa.large_binary(), metadata=BLOB_META)


def is_blob(field: pa.Field) -> bool:
    meta = field.metadata or {}
    if meta.get(b"lance-encoding:blob") == b"true":
        return True
    return "blob" in str(field.type).lower()


def owned(
    fields: Iterable[pa.Field],
    stage: str,
    version: str,
    model: str | None = None,
    spec: str | None = None,
) -> list[pa.Field]:
    """Stamp fields with their owner stage, version and model."""
    out = []
    for f in fields:
        meta = dict(f.metadata or {})
        meta[STAGE_KEY] = stage.encode()
        meta[VERSION_KEY] = version.encode()
        if model:
            meta[MODEL_KEY] = model.encode()
        if spec:
            meta[SPEC_KEY] = spec.encode()
        out.append(f.with_metadata(meta))
    return out


def owner(field: pa.Field) -> str | None:
    v = (field.metadata or {}).get(STAGE_KEY)
    return v.decode() if v else None


def spec_of(field: pa.Field) -> str | None:
    v = (field.metadata or {}).get(SPEC_KEY)
    return v.decode() if v else None


def version_of(field: pa.Field) -> str | None:
    v = (field.metadata or {}).get(VERSION_KEY)
    return v.decode() if v else None


SOURCE_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string()),  # nullable: Lance needs that to write other columns alone
    pa.field("uri", pa.string()),  # the user's path; undecodable bytes shown as \xNN escapes
    pa.field("uri_bytes", pa.binary()),  # the path's raw bytes when they are not valid UTF-8
    pa.field("filename", pa.string()),
    pa.field("media_kind", pa.string()),
    pa.field("size_bytes", pa.int64()),
    pa.field("stored", pa.string()),  # "blob" | "reference"
    pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    pa.field("container", pa.string()),
    pa.field("duration_s", pa.float64()),
    pa.field("fps", pa.float64()),
    pa.field("frame_count", pa.int64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("video_codec", pa.string()),
    pa.field("pix_fmt", pa.string()),
    pa.field("rotation", pa.int16()),
    pa.field("bitrate", pa.int64()),
    pa.field("has_audio", pa.bool_()),
    pa.field("audio_codec", pa.string()),
    pa.field("sample_rate", pa.int32()),
    pa.field("channels", pa.int16()),
    pa.field("ingest_error", pa.string()),
    blob_field("media"),
]


def sources_schema() -> pa.Schema:
    return pa.schema(owned(SOURCE_FIELDS, INGEST, "1"))


# Append-only: every path a source was seen under (a copy, a renamed file, a manifest entry), so a
# user finds a file by any of its names without `sources` rows ever being rewritten.
SOURCE_PATH_FIELDS: list[pa.Field] = [
    pa.field("source_id", pa.string()),
    pa.field("path", pa.string()),  # as `sources.uri`: escaped where not valid UTF-8
    pa.field("path_bytes", pa.binary()),  # raw bytes when not valid UTF-8, else null
    pa.field("first_seen", pa.timestamp("us", tz="UTC")),
]


def source_paths_schema() -> pa.Schema:
    return pa.schema(owned(SOURCE_PATH_FIELDS, INGEST, "1"))


def check_ownership(schema: pa.Schema, stage_name: str, fields: Iterable[pa.Field]) -> None:
    """Refuse an output column that exists and belongs to someone else."""
    for f in fields:
        idx = schema.get_field_index(f.name)
        if idx < 0:
            continue
        existing = schema.field(idx)
        who = owner(existing)
        if who != stage_name:
            raise ContractError(
                f"stage '{stage_name}': output column '{f.name}' already exists, owned by "
                f"{repr(who) if who else 'no stage (a base column)'}; a column has exactly one "
                f"owner: rename the output (e.g. '{stage_name}_{f.name}')"
            )


def type_matches(declared: pa.DataType, existing: pa.DataType) -> bool:
    return declared.equals(existing) or (
        is_blob(pa.field("x", existing)) and declared == pa.large_binary()
    )
