"""Search: text, "more like this" and image queries through the retrieval API, with a `where`
filter. Nothing loads until the first query (the text/image model is the retrieval API's)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import streamlit as st
from sila.viewer import data
from sila.viewer.components import grid, missing

NAMES = {
    "text": ("text", "query", "q"),
    "like": ("like", "like_id", "sample_id", "id"),
    "image": ("image", "image_bytes"),
    "where": ("where", "filter"),
    "limit": ("limit", "k", "top_k"),
    "table": ("table",),
}


def search_api() -> Callable[..., Any] | None:
    """`Lake.search` or `sila.retrieval.search`, when this install has one (checked at run time)."""
    fn = getattr(type(data.lake()), "search", None)
    if fn is not None:
        return lambda **kw: fn(data.lake(), **kw)
    try:
        import sila.retrieval as retrieval
    except ImportError:
        return None
    fn = getattr(retrieval, "search", None)
    return (lambda **kw: fn(data.lake(), **kw)) if fn is not None else None


def call(api: Callable[..., Any], target: Callable[..., Any] | None, **wanted: Any) -> Any:
    """Pass each argument under the name the API's signature uses for it."""
    try:
        params = inspect.signature(target or api).parameters
    except (TypeError, ValueError):
        params = {}
    open_kw = not params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {}
    for role, value in wanted.items():
        if value is None:
            continue
        name = next((n for n in NAMES[role] if n in params), None)
        if name is None and open_kw:
            name = NAMES[role][0]
        if name is not None:
            kwargs[name] = value
    return api(**kwargs)


def as_rows(result: Any) -> list[dict]:
    if result is None:
        return []
    if isinstance(result, pa.Table):
        return result.to_pylist()
    if hasattr(result, "to_arrow"):
        return result.to_arrow().to_pylist()
    if hasattr(result, "to_dict") and hasattr(result, "columns"):  # a DataFrame
        return result.to_dict("records")
    return [r if isinstance(r, dict) else {"id": r} for r in result]


def _target() -> Callable[..., Any] | None:
    fn = getattr(type(data.lake()), "search", None)
    if fn is None:
        try:
            import sila.retrieval as retrieval

            fn = getattr(retrieval, "search", None)
        except ImportError:
            return None
    return fn


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
            "This install has no retrieval API yet (`sila.retrieval.search` / `Lake.search`). "
            "Once it is installed, build the index and come back:"
        )
        st.code(f"sila index --lake {data.lake_uri()}", language="bash")
        return
    mode = st.radio(
        "query", ["text", "more like this", "image"], horizontal=True, key="search_mode"
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
            result = call(
                api,
                _target(),
                text=text or None,
                like=like or None,
                image=image,
                where=where.strip() or None,
                limit=limit,
                table="clips",
            )
        except Exception as e:  # noqa: BLE001 - show the retrieval API's own message
            st.error(f"search failed: {type(e).__name__}: {e}")
            return
    hits = as_rows(result)
    if not hits:
        st.info("no result")
        return
    ids = [h.get("id") for h in hits if h.get("id") is not None]
    page = data.rows_by_ids("clips", ids, ["source_id", "start_s", "end_s"])
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
