"""Search: text, "more like this" and image queries through the retrieval API, with a `where`
filter. Nothing loads until the first query (the text/image model is the retrieval API's)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import streamlit as st
from sila.viewer import data, tiles
from sila.viewer.components import grid, missing


def search_api() -> Callable[..., Any] | None:
    """`Lake.search` (sila.retrieval), when this install has it: checked at run time."""
    fn = getattr(type(data.lake()), "search", None)
    return (lambda *a, **kw: fn(data.lake(), *a, **kw)) if fn is not None else None


def as_rows(result: Any) -> tuple[list[dict], list[str]]:
    """(hits, notes) from a SearchResult (`.results`, `.notes`) or a plain table/list."""
    notes = list(getattr(result, "notes", None) or [])
    if getattr(result, "random_weights", False) and not any("RANDOM" in n for n in notes):
        notes.append("the embeddings were made with RANDOM weights: the order means nothing")
    if hasattr(result, "results"):
        result = result.results
    if result is None:
        return [], notes
    if isinstance(result, pa.Table):
        return result.to_pylist(), notes
    return [r if isinstance(r, dict) else {"id": r} for r in result], notes


def run_query(api, text, like, image: bytes | None, where, k) -> Any:
    """One query through the retrieval API (an uploaded image goes through a temp file, as the
    API takes a path; the file is outside the lake and removed after)."""
    if image is None:
        return api(text, like=like, where=where, k=k, table="clips")
    with tempfile.NamedTemporaryFile(suffix=".img", prefix="sila-view-") as f:
        f.write(image)
        f.flush()
        return api(None, image=f.name, where=where, k=k, table="clips")


def render() -> None:
    st.title("Search")
    if "clips" not in data.tables():
        missing("Search needs the clips table, which is", None, "clips")
        return
    if not data.has_column("clips", "embedding"):
        missing("Search needs clip embeddings, which are", "embedding", "clips")
        return
    api = search_api()
    if api is None:
        st.info(
            "This install has no retrieval API yet (`Lake.search` from `sila.retrieval`). "
            "Once it is installed, build the index and come back:"
        )
        st.code(f"sila index build --lake {data.lake_uri()}", language="bash")
        return
    modes = ["text", "more like this", "image"]
    mode = st.radio(  # arriving from a sample's "more like this" link: that mode, that clip
        "query",
        modes,
        index=1 if st.query_params.get("like") else 0,
        horizontal=True,
        key="search_mode",
    )
    with st.form("search"):
        text = like = image = None
        if mode == "text":
            text = st.text_input("describe what you look for", key="search_text")
        elif mode == "more like this":
            like = st.text_input(
                "clip id", value=st.query_params.get("like", ""), key="search_like"
            )
        else:
            up = st.file_uploader("image", type=["jpg", "jpeg", "png", "webp"], key="search_image")
            image = up.getvalue() if up is not None else None
        where = st.text_input("where (SQL prefilter)", key="search_where")
        limit = st.slider("results", 4, 96, 24, step=4, key="search_limit")
        go = st.form_submit_button("search")
    if not go or not (text or like or image):
        st.caption("the search model loads on the first query")
        return
    with st.spinner("searching (the first query loads the model)…"):
        try:
            result = run_query(api, text or None, like or None, image, where.strip() or None, limit)
        except Exception as e:  # noqa: BLE001 - show the retrieval API's own message
            st.error(f"search failed: {e}")
            return
    hits, notes = as_rows(result)
    for note in notes:
        (st.warning if "RANDOM" in note else st.caption)(note)
    if not hits:
        st.info("no result")
        return
    ids = [h.get("id") for h in hits if h.get("id") is not None]
    cols = ["source_id", "start_s", "end_s", "duration_s", *tiles.decision_columns("clips")]
    page = data.rows_by_ids("clips", ids, [c for c in cols if data.has_column("clips", c)])
    order = {i: n for n, i in enumerate(ids)}
    page = page.take(
        sorted(range(page.num_rows), key=lambda r: order.get(page["id"][r].as_py(), 0))
    )
    score_key = next(
        (k for k in ("score", "similarity", "_distance", "distance") if k in hits[0]), None
    )
    if score_key:
        by_id = {h.get("id"): h.get(score_key) for h in hits}
        page = page.append_column(
            score_key, pa.array([by_id.get(i) for i in page["id"].to_pylist()])
        )
    st.caption(f"{len(hits)} results")
    grid("clips", page, [score_key] if score_key else [])


if __name__ == "__main__":
    render()
