"""One sample: its media (the clip plays), its source, neighbouring clips, and every column
grouped by the stage that wrote it. Opened as `sample?table=clips&id=<id>`."""

from __future__ import annotations

import streamlit as st
from sila.viewer import data, tiles
from sila.viewer.components import missing, sample_link, stage_groups, table_picker

NEIGHBOURS = 3
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}


def render() -> None:
    table = table_picker(key="sample_table")
    if table is None:
        return
    row_id = st.query_params.get("id") or st.session_state.get("sample_id")
    typed = st.text_input("sample id", value=row_id or "", key="sample_id_box")
    row_id = typed.strip() or row_id
    if not row_id:
        first = data.rows(table, ["id"], None, 0, 1)
        if first.num_rows == 0:
            st.info(f"table {table} is empty")
            return
        row_id = first["id"][0].as_py()
    rec = data.row(table, row_id)
    st.title(f"{table} sample")
    st.caption(row_id)
    if rec is None:
        st.error(f"no row with id {row_id!r} in {table}")
        return
    _verdict(table, rec)
    left, right = st.columns([3, 2])
    with left:
        _media(table, rec)
    with right:
        _context(table, rec)
    st.subheader("Columns by stage")
    stage_groups(table, rec)


def _verdict(table: str, rec: dict) -> None:
    """The row's verdict first: which decisions reject it and why, its row errors, and the
    command that explains it column by column."""
    state, why = tiles.verdict(rec)
    text = "; ".join(f"**{s}**: {r}" for s, r in why)
    if state == "rejected":
        st.error(f"REJECTED by {text}")
    elif state == "kept":
        st.success("KEPT by every decision")
    elif state == "undetermined":
        st.warning(f"UNDETERMINED: {text}")
    errs = {k.removesuffix("_error"): v for k, v in rec.items() if k.endswith("_error") and v}
    for stage, msg in errs.items():
        st.error(f"row error in **{stage}**: {msg}")
    st.caption(f"why, column by column: `sila explain {rec['id']}`")


def _media(table: str, rec: dict) -> None:
    """Play the media of this row: one blob read by row id, never the column."""
    blobs = [c.name for c in data.columns(table) if c.kind == "media"]
    if not blobs:
        if table == "clips":
            missing("The clip video is", "video", table)
        return
    for name in blobs:
        b = data.blob(table, name, rec["_rowid"])
        if b is None:
            err = rec.get(f"{data.columns_owner(table, name)}_error")
            if err:
                st.error(f"{name}: {err}")
            elif table == "clips":
                missing(f"This clip's `{name}` is", name, table)
            else:
                st.caption(f"{name}: none")
            continue
        if b.data is None:
            st.warning(f"{name}: {b.size / 2**20:,.0f} MiB, too large to send to the browser")
            continue
        kind = rec.get("media_kind") or ("video" if name == "video" else None)
        if kind == "image":
            st.image(b.data, width="stretch")
        elif kind == "audio":
            fmt = AUDIO_FORMATS.get(str(rec.get("container") or "").split(",")[0], "audio/wav")
            st.audio(b.data, format=fmt)
        elif kind == "video":
            st.video(b.data, format="video/mp4")
        else:
            st.caption(f"{name}: {b.size:,} bytes of {kind or 'unknown'} media")
        st.caption(f"{name}: {b.size:,} bytes")


def _context(table: str, rec: dict) -> None:
    src = rec.get("source_id")
    if src and "sources" in data.tables():
        st.markdown("**source**")
        s = data.rows_by_ids(
            "sources", [src], ["filename", "media_kind", "duration_s", "thumbnail"]
        )
        if s.num_rows:
            srow = s.to_pylist()[0]
            if srow.get("thumbnail"):
                st.image(srow["thumbnail"], width=240)
            st.caption(
                f"{srow.get('filename')} · {srow.get('media_kind')} · {srow.get('duration_s')} s"
            )
        sample_link("sources", src, f"open source {src[:12]}…")
    if table == "clips" and data.has_column(table, "embedding"):
        st.page_link("search.py", label="more like this", query_params={"like": rec["id"]})
    if src and "clip_index" in rec:
        st.markdown("**neighbouring clips**")
        i = rec["clip_index"] or 0
        where = (
            f"source_id = {data.quote(src)} AND clip_index >= {i - NEIGHBOURS} "
            f"AND clip_index <= {i + NEIGHBOURS}"
        )
        near = data.rows(
            table, ["id", "clip_index", "start_s", "end_s"], where, 0, 2 * NEIGHBOURS + 1
        )
        for n in sorted(near.to_pylist(), key=lambda r: r["clip_index"]):
            label = f"#{n['clip_index']}  {n['start_s']:.2f}–{n['end_s']:.2f} s"
            if n["id"] == rec["id"]:
                st.markdown(f"**{label} (this clip)**")
            else:
                sample_link(table, n["id"], label)
    if table == "sources" and "clips" in data.tables() and data.has_column("clips", "source_id"):
        kids = data.rows(
            "clips",
            ["id", "clip_index", "start_s", "end_s"],
            f"source_id = {data.quote(rec['id'])}",
            0,
            50,
        )
        if kids.num_rows:
            st.markdown(f"**clips of this source** ({kids.num_rows})")
            for n in sorted(kids.to_pylist(), key=lambda r: r["clip_index"]):
                sample_link(
                    "clips", n["id"], f"#{n['clip_index']}  {n['start_s']:.2f}–{n['end_s']:.2f} s"
                )


if __name__ == "__main__":
    render()
