"""Distributions: histograms of numeric columns, counts of tags, reasons and decisions, the
export buckets (resolution x duration, from the recipe's `[buckets]`), and a 2-D PCA map of a
sample of embeddings. Each plot reads only the columns it draws."""

from __future__ import annotations

import os

import altair as alt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import streamlit as st
from sila.viewer import data
from sila.viewer.components import missing, plot, table_picker

from sila.export.buckets import Buckets, recipe_buckets

BINS = 40
MAP_SAMPLE = 2000
SCORE_WORDS = ("score", "similarity", "prob", "aesthetic", "sharp", "motion")


def _read(uri: str, table: str, ver: int, name: str) -> pa.ChunkedArray:
    return data.lake().table(table, version=ver).to_table(columns=[name])[name]


def _floats(uri: str, table: str, ver: int, name: str) -> np.ndarray:
    return _read(uri, table, ver, name).to_numpy(zero_copy_only=False).astype(np.float64)


# Summaries are cached per table version (a few dozen rows each), never the columns: a page
# rerun costs nothing, and the table is read again only after a commit.
@st.cache_data(show_spinner=False, max_entries=256)
def _histogram(uri: str, table: str, ver: int, name: str) -> pd.DataFrame:
    values = _floats(uri, table, ver, name)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return pd.DataFrame()
    counts, edges = np.histogram(values, bins=BINS)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "rows": counts})


@st.cache_data(show_spinner=False, max_entries=256)
def _value_counts(uri: str, table: str, ver: int, name: str, decision: bool) -> pd.DataFrame:
    arr = _read(uri, table, ver, name)
    if decision:
        vals = pc.cast(arr, pa.string()).fill_null("not computed")
        vals = pc.replace_substring(vals, "true", "kept")
        vals = pc.replace_substring(vals, "false", "dropped")
    else:
        vals = pc.list_flatten(arr)
    vc = pc.value_counts(vals)
    df = pd.DataFrame(
        {"value": vc.field("values").to_pylist(), "rows": vc.field("counts").to_pylist()}
    )
    return df.sort_values("rows", ascending=False).head(30)


@st.cache_data(show_spinner=False, max_entries=64)
def _bucket_counts(
    uri: str, table: str, ver: int, w: str, h: str, d: str, b: Buckets
) -> pd.DataFrame:
    width, height, dur = (_floats(uri, table, ver, c) for c in (w, h, d))
    ok = np.isfinite(width) & np.isfinite(height) & np.isfinite(dur) & (width > 0) & (height > 0)
    short = np.minimum(width[ok], height[ok])
    ri = np.clip(np.searchsorted(b.short_side, short, side="right") - 1, 0, None)
    di = np.clip(np.searchsorted(b.duration_s, dur[ok], side="right") - 1, 0, None)
    rl, dl = b.resolution_labels(), b.duration_labels()
    return (
        pd.DataFrame({"resolution": [rl[i] for i in ri], "duration": [dl[i] for i in di]})
        .value_counts()
        .rename("samples")
        .reset_index()
    )


@st.cache_resource(show_spinner=False)
def buckets() -> Buckets:
    from sila.errors import SilaError
    from sila.recipe import load_recipe

    name = os.environ.get(data.RECIPE_ENV) or os.environ.get("SILA_RECIPE") or "demo"
    try:
        return recipe_buckets(load_recipe(name))
    except SilaError:
        return Buckets()


def render() -> None:
    st.title("Distributions")
    table = table_picker(key="dist_table")
    if table is None:
        return
    cols = data.columns(table)
    _numbers(table, cols)
    _counts(table, cols)
    _buckets(table)
    _embedding_map(table, cols)


def _numbers(table: str, cols: list[data.Column]) -> None:
    numeric = [c.name for c in cols if c.kind == "number"]
    if not numeric:
        return
    st.subheader("Numeric columns")
    ran = set(data.table_stages(table))
    owned = sorted(
        (c.name for c in cols if c.kind == "number" and c.stage in ran),
        key=lambda n: not any(w in n for w in SCORE_WORDS),  # scores first, else schema order
    )
    default = (owned + [c for c in ("duration_s", "size_bytes") if c in numeric])[:4] or numeric[:2]
    picked = st.multiselect("columns", numeric, default=default, key=f"hist_{table}")
    cells = st.columns(2)
    for i, name in enumerate(picked):
        df = _histogram(data.lake_uri(), table, data.version(table), name)
        with cells[i % 2]:
            if df.empty:
                st.caption(f"{name}: no values yet")
                continue
            chart = (
                alt.Chart(df, title=f"{name} ({int(df['rows'].sum()):,} values)")
                .mark_bar()
                .encode(
                    x=alt.X("lo:Q", title=name, bin="binned"),
                    x2="hi:Q",
                    y=alt.Y("rows:Q"),
                    tooltip=["lo", "hi", "rows"],
                )
            )
            plot(chart, 220)


def _counts(table: str, cols: list[data.Column]) -> None:
    lists = [c.name for c in cols if c.kind in ("tags", "reasons")]
    decisions = [c.name for c in cols if c.kind == "decision"]
    if not lists and not decisions:
        return
    st.subheader("Tags, reasons and decisions")
    cells = st.columns(2)
    for i, name in enumerate(decisions + lists):
        df = _value_counts(data.lake_uri(), table, data.version(table), name, name in decisions)
        with cells[i % 2]:
            if df.empty:
                st.caption(f"{name}: none yet")
                continue
            chart = (
                alt.Chart(df, title=name)
                .mark_bar()
                .encode(
                    x="rows:Q", y=alt.Y("value:N", sort="-x", title=None), tooltip=["value", "rows"]
                )
            )
            plot(chart, 110 + 24 * len(df))  # title, axis and padding are inside the height


def _pick(table: str, *names: str) -> str | None:
    return next((n for n in names if data.has_column(table, n)), None)


def _buckets(table: str) -> None:
    w = _pick(table, "video_width", "width")
    h = _pick(table, "video_height", "height")
    d = _pick(table, "video_duration_s", "duration_s")
    st.subheader("Resolution x duration buckets")
    if not (w and h and d):
        if table == "clips":
            missing("Clip sizes (from transcode) are", "video_width", table)
        else:
            st.caption("this table has no width, height and duration columns")
        return
    b = buckets()
    df = _bucket_counts(data.lake_uri(), table, data.version(table), w, h, d, b)
    if df.empty:
        st.caption(f"no row has {w}, {h} and {d} yet")
        return
    rl, dl = b.resolution_labels(), b.duration_labels()
    base = alt.Chart(df).encode(
        x=alt.X("duration:N", sort=dl), y=alt.Y("resolution:N", sort=rl[::-1])
    )
    heat = base.mark_rect().encode(color=alt.Color("samples:Q", scale=alt.Scale(scheme="blues")))
    text = base.mark_text().encode(text="samples:Q")
    plot(heat + text, 60 + 36 * len(rl))
    st.caption(
        f"{int(df['samples'].sum()):,} samples by short side of ({w}, {h}) and {d}; edges from the "
        "recipe's [buckets] (the same buckets export uses)"
    )


@st.cache_data(show_spinner=False, max_entries=16)
def _pca(uri: str, table: str, ver: int, name: str, color: str | None, n: int) -> pd.DataFrame:
    ds = data.lake().table(table, version=ver)
    total = ds.count_rows()
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(total, size=min(n, total), replace=False)).tolist()
    cols = [name, "id"] + ([color] if color else [])
    t = ds.take(idx, columns=list(dict.fromkeys(cols)))
    emb = t[name]
    mask = pc.is_valid(emb).to_numpy(zero_copy_only=False)
    if not mask.any():
        return pd.DataFrame()
    t = t.filter(pa.array(mask))
    vecs = np.asarray(t[name].to_pylist(), dtype=np.float32)
    vecs -= vecs.mean(axis=0)
    _, _, vt = np.linalg.svd(vecs, full_matrices=False)  # first two principal axes
    xy = vecs @ vt[:2].T
    df = pd.DataFrame({"pc1": xy[:, 0], "pc2": xy[:, 1], "id": t["id"].to_pylist()})
    if color:
        df[color] = [str(v) for v in t[color].to_pylist()]
    return df


def _embedding_map(table: str, cols: list[data.Column]) -> None:
    emb = [c.name for c in cols if c.kind == "embedding"]
    st.subheader("Embedding map (PCA of a sample)")
    if not emb:
        if table == "clips":
            missing("Embeddings are", "embedding", table)
        else:
            st.caption("no embedding column in this table")
        return
    name = "embedding" if "embedding" in emb else emb[0]
    options = ["(none)"] + [
        c.name for c in cols if c.kind in ("decision", "text") and c.name != "id"
    ]
    color = st.selectbox("colour by", options, key=f"map_color_{table}")
    color = None if color == "(none)" else color
    df = _pca(data.lake_uri(), table, data.version(table), name, color, MAP_SAMPLE)
    if df.empty:
        st.caption(f"no row has `{name}` yet")
        return
    enc = {"x": "pc1:Q", "y": "pc2:Q", "tooltip": ["id"] + ([color] if color else [])}
    if color:
        enc["color"] = alt.Color(f"{color}:N")
    plot(alt.Chart(df).mark_circle(size=28, opacity=0.7).encode(**enc), 420)
    st.caption(f"{len(df):,} random rows with `{name}`")


if __name__ == "__main__":
    render()
