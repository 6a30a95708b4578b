"""What a tile shows: a picture of the row itself (a clip's own frame) and its verdict."""

from __future__ import annotations

import tempfile

import pyarrow as pa
import streamlit as st
from sila.viewer.data import blob, columns, dataset, has_column, lake_uri, rows_by_ids, version

TILE_SIDE = 320  # long side of a tile picture decoded from a clip


def thumbnails_for(table: str, page: pa.Table) -> list[bytes | None]:
    """A picture per row: its own `thumbnail`; for a clip, a frame decoded from its own `video`
    (the middle of the clip, cached); its source's thumbnail only where the clip has no video."""
    n = page.num_rows
    if "thumbnail" in page.column_names:
        return page["thumbnail"].to_pylist()
    out: list[bytes | None] = [None] * n
    if "_rowid" in page.column_names and has_column(table, "video"):
        durations = (
            page["duration_s"].to_pylist() if "duration_s" in page.column_names else [0.0] * n
        )
        for i, (rid, dur) in enumerate(zip(page["_rowid"].to_pylist(), durations, strict=True)):
            out[i] = clip_frame(table, int(rid), float(dur or 0.0))
    if "source_id" in page.column_names and has_column("sources", "thumbnail"):
        src = page["source_id"].to_pylist()
        wanted = sorted({s for s, o in zip(src, out, strict=True) if s and o is None})
        if wanted:
            t = rows_by_ids("sources", wanted, ["thumbnail"])
            by_id = dict(zip(t["id"].to_pylist(), t["thumbnail"].to_pylist(), strict=True))
            out = [o if o is not None else by_id.get(s) for o, s in zip(out, src, strict=True)]
    return out


@st.cache_data(show_spinner=False, max_entries=4096)
def _clip_frame(uri: str, table: str, ver: int, row_id: int, t_s: float) -> bytes | None:
    from sila.errors import MediaError
    from sila.media import extract_frame_jpeg

    b = blob(table, "video", row_id, max_bytes=64 * 2**20)
    if b is None or b.data is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(b.data)
        f.flush()
        try:
            return extract_frame_jpeg(f.name, t_s, max_side=TILE_SIDE)
        except MediaError:
            try:  # a clip shorter than its recorded duration: its first frame
                return extract_frame_jpeg(f.name, 0.0, max_side=TILE_SIDE)
            except MediaError:
                return None


def clip_frame(table: str, row_id: int, duration_s: float) -> bytes | None:
    """A JPEG of the clip's middle frame, decoded through sila.media from its own `video` blob
    (one blob read by row id); cached per table version."""
    return _clip_frame(lake_uri(), table, version(table), row_id, round(duration_s / 2, 3))


def decision_columns(table: str) -> list[str]:
    """The columns tiles and verdicts need: every `<stage>_keep`, `<stage>_reasons`,
    `<stage>_of` (a duplicate's representative) and `<stage>_error` the table holds."""
    names = set(dataset(table).schema.names)
    out = []
    for c in columns(table):
        if c.kind == "decision":
            base = c.name.removesuffix("_keep")
            out += [c.name] + [f"{base}_{x}" for x in ("reasons", "of") if f"{base}_{x}" in names]
        elif c.kind == "error" and c.stage:
            out.append(c.name)
    return out


def verdict(rec: dict) -> tuple[str, list[tuple[str, str]]]:
    """("kept" | "rejected" | "undetermined" | "no decision", [(stage, why)]) of a row from
    its decision columns: rejected when any decision rejects it (why: its reasons)."""
    decided = [k.removesuffix("_keep") for k in rec if k.endswith("_keep")]
    rejected = [
        (
            s,
            ", ".join(rec.get(f"{s}_reasons") or [])
            or ("duplicate" if rec.get(f"{s}_of") else "rejected"),
        )
        for s in decided
        if rec.get(f"{s}_keep") is False
    ]
    if rejected:
        return "rejected", rejected
    pending = [(s, "not decided") for s in decided if rec.get(f"{s}_keep") is None]
    if pending:
        return "undetermined", pending
    return ("kept", []) if decided else ("no decision", [])


def errors_where(table: str) -> str | None:
    """A predicate selecting the rows with any row error on this table (None: no error column)."""
    cols = [c.name for c in columns(table) if c.kind == "error" and c.stage]
    return " OR ".join(f"{c} IS NOT NULL" for c in cols) or None
