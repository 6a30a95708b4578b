"""Duplicates: near-duplicate groups side by side, with similarities and which one was kept
(columns `dedup_group`, `dedup_keep`, `dedup_of`, `dedup_similarity` of the dedup stage)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import streamlit as st
from sila.viewer import data, tiles
from sila.viewer.components import missing, sample_link

GROUPS_PER_PAGE = 8
PER_ROW = 6
SHOWN = 12  # members drawn per group: the kept one and the most similar (the rest are counted)
DEDUP_COLUMNS = ("dedup_group", "dedup_keep", "dedup_of", "dedup_similarity")


@st.cache_data(show_spinner=False, max_entries=16)
def _groups(uri: str, table: str, ver: int) -> pa.Table:
    """(group, size, kept) for every group with more than one member, largest first."""
    ds = data.lake().table(table, version=ver)
    have = [c for c in ("dedup_group", "dedup_keep") if c in ds.schema.names]
    t = ds.to_table(columns=have, filter="dedup_group IS NOT NULL")
    if "dedup_keep" not in have:
        t = t.append_column("dedup_keep", pa.nulls(t.num_rows, pa.bool_()))
    keep = pc.cast(pc.fill_null(t["dedup_keep"], False), pa.int64())
    g = (
        pa.table({"group": t["dedup_group"], "kept": keep})
        .group_by("group")
        .aggregate([("kept", "count"), ("kept", "sum")])
        .rename_columns(["group", "size", "kept"])
    )
    g = g.filter(pc.greater(g["size"], 1))
    return g.sort_by([("size", "descending"), ("group", "ascending")])


def render() -> None:
    st.title("Duplicates")
    candidates = [t for t in data.tables() if data.has_column(t, "dedup_group")]
    if not candidates:
        missing("Duplicate groups are", "dedup_group", "clips")
        return
    table = st.selectbox("table", candidates, key="dup_table")
    groups = _groups(data.lake_uri(), table, data.version(table))
    if groups.num_rows == 0:
        st.success("no duplicate group: every sample is unique")
        return
    dups = int(pc.sum(groups["size"]).as_py()) - int(pc.sum(groups["kept"]).as_py())
    st.caption(
        f"{groups.num_rows:,} groups with more than one member; {dups:,} samples marked as "
        "duplicates (not kept)"
    )
    pages = max(1, -(-groups.num_rows // GROUPS_PER_PAGE))
    n = st.number_input(f"page (of {pages})", 1, pages, 1, key="dup_page")
    chunk = groups.slice((n - 1) * GROUPS_PER_PAGE, GROUPS_PER_PAGE)
    cols = [
        c
        for c in (*DEDUP_COLUMNS, "source_id", "thumbnail", "duration_s")
        if data.has_column(table, c)
    ]
    recs = chunk.to_pylist()
    # one read for the whole page of groups (the predicate reads dedup_group only)
    where = "dedup_group IN (" + ", ".join(_literal(r["group"]) for r in recs) + ")"
    members = data.rows(table, ["id", *cols], where, 0, sum(r["size"] for r in recs))
    thumbs = tiles.thumbnails_for(table, members)
    by_group: dict = {}
    for rec, thumb in zip(members.to_pylist(), thumbs, strict=True):
        by_group.setdefault(rec["dedup_group"], []).append((rec, thumb))
    for r in recs:
        _group(table, r["group"], r["size"], by_group.get(r["group"], []))


def _literal(value) -> str:
    return data.quote(value) if isinstance(value, str) else str(value)


def _group(table: str, gid, size: int, members: list[tuple[dict, bytes | None]]) -> None:
    st.markdown(f"**group {gid}** · {size} members")
    members = sorted(
        members, key=lambda m: (not m[0].get("dedup_keep"), -(m[0].get("dedup_similarity") or 0))
    )[:SHOWN]
    for start in range(0, len(members), PER_ROW):
        cells = st.columns(PER_ROW)
        for cell, (r, thumb) in zip(cells, members[start : start + PER_ROW], strict=False):
            with cell:
                if thumb:
                    st.image(thumb, width="stretch")
                sample_link(table, r["id"], n=18)
                sim = r.get("dedup_similarity")
                sim_txt = f"similarity {sim:.3f}" if sim is not None else ""
                if r.get("dedup_keep"):
                    st.markdown(f":green[**kept**] {sim_txt}")
                else:
                    of = r.get("dedup_of")
                    st.markdown(
                        f":red[duplicate] {sim_txt}" + (f"  \nof `{str(of)[-16:]}`" if of else "")
                    )
    if size > len(members):
        st.caption(f"… and {size - len(members)} more duplicates in this group")
    st.divider()


if __name__ == "__main__":
    render()
