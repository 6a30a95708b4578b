"""Samples: a `where` box and a column picker over any table; pages or a random sample, as a
thumbnail grid or a table; every sample links to its own page."""

from __future__ import annotations

import random

import pandas as pd
import streamlit as st
from sila.viewer import data, tiles
from sila.viewer.components import grid, table_picker

PAGE_SIZES = (12, 24, 48, 96)
SCORE_WORDS = ("score", "similarity", "prob", "aesthetic")
DEFAULT_COLUMNS = (
    "id", "media_kind", "filename", "source_id", "clip_index", "start_s", "end_s",
    "duration_s", "width", "height", "video_width", "video_height",
)  # fmt: skip


def _default_columns(table: str) -> list[str]:
    cols = data.columns(table)
    names = [c.name for c in cols]
    chosen = [c for c in DEFAULT_COLUMNS if c in names]
    # plus what curation stages decided: scores and decisions are what people filter on
    ran = set(data.table_stages(table))
    owned = [c for c in cols if c.stage in ran and c.kind in ("decision", "number")]
    owned.sort(key=lambda c: (c.kind != "decision", not any(w in c.name for w in SCORE_WORDS)))
    chosen += [c.name for c in owned][:6]
    return list(dict.fromkeys(chosen))


def render() -> None:
    st.title("Samples")
    table = table_picker(key="samples_table")
    if table is None:
        return
    plain = data.plain_columns(table)
    where = st.text_input(
        "where (SQL predicate)",
        key=f"where_{table}",
        placeholder="e.g. duration_s > 1 AND transcode_error IS NULL",
    )
    errors_only = st.checkbox("errors only", key=f"errors_{table}")
    if errors_only:
        errs = tiles.errors_where(table)
        if errs is None:
            st.info("this table has no row error columns yet")
            return
        where = f"({where}) AND ({errs})" if where.strip() else errs
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
    picked = c1.multiselect("columns", plain, default=_default_columns(table), key=f"cols_{table}")
    size = c2.selectbox("per page", PAGE_SIZES, index=1, key="page_size")
    mode = c3.radio("rows", ["pages", "random"], horizontal=True, key="mode")
    view = c4.radio("view", ["grid", "table"], horizontal=True, key="view")
    try:
        total = data.count(table, where)
    except data.QueryError as e:
        st.error(f"Lance refused the predicate: {e}")
        return
    wanted = list(dict.fromkeys(["id", *picked]))
    # grid pictures (a clip's middle frame needs its duration) and the tiles' badges
    extra = [c for c in ("source_id", "thumbnail", "duration_s") if c in plain]
    extra += tiles.decision_columns(table)
    extra = [c for c in dict.fromkeys(extra) if c not in wanted]
    if mode == "random":
        if st.button("new random sample", key="reshuffle"):
            st.session_state["seed"] = random.randrange(1 << 30)
        seed = st.session_state.setdefault("seed", 0)
        page = data.random_rows(table, [*wanted, *extra], where, size, seed)
        st.caption(f"{page.num_rows} random rows of {total:,} matching")
    else:
        pages = max(1, -(-total // size))
        n = st.number_input(f"page (of {pages:,})", 1, pages, 1, key=f"page_{table}")
        page = data.rows(table, [*wanted, *extra], where, (n - 1) * size, size)
        first = (n - 1) * size
        st.caption(f"rows {first + 1:,}–{first + page.num_rows:,} of {total:,} matching")
    if page.num_rows == 0:
        st.info("no row matches")
        return
    if view == "grid":
        grid(table, page, [c for c in picked if c not in ("id", "source_id")][:3])
    else:
        shown = page.select([c for c in wanted if c in page.column_names])
        df = pd.DataFrame(
            {c: [data.to_display(v) for v in shown[c].to_pylist()] for c in shown.column_names}
        )
        st.dataframe(df, hide_index=True, width="stretch")


if __name__ == "__main__":
    render()
