"""Widgets shared by the pages: missing-stage notes, the thumbnail grid, captions, column groups."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import streamlit as st
from sila.viewer import data, tiles

SAMPLE_PAGE = "sample.py"


def missing(what: str, column: str | None, table: str | None = None) -> None:
    """Say what is missing (`what`: "<thing> is" or "<things> are") and the command that
    would produce it."""
    st.info(f"{what} not there yet; this command produces it:")
    st.code(data.stage_hint(column, table), language="bash")


def table_picker(label: str = "table", key: str = "table", prefer: str = "clips") -> str | None:
    names = data.tables()
    if not names:
        missing("The lake has no table: its sources table is", None, "sources")
        return None
    qp = st.query_params.get("table")
    default = qp if qp in names else (prefer if prefer in names else names[0])
    return st.selectbox(label, names, index=names.index(default), key=key)


def sample_link(table: str, row_id: str, label: str | None = None, n: int = 42) -> None:
    st.page_link(
        SAMPLE_PAGE, label=label or _short(row_id, n), query_params={"table": table, "id": row_id}
    )


def _short(text: str, n: int = 42) -> str:
    """Shortened for a label; a clip id keeps its distinguishing frame range whole."""
    text = str(text)
    if len(text) <= n:
        return text
    head, sep, tail = text.rpartition("/")
    if sep and len(tail) < n - 6:
        return head[: max(4, n - len(tail) - 2)] + "…/" + tail
    return text[: n // 2 - 1] + "…" + text[-(n // 2) + 1 :]


def grid(table: str, page: pa.Table, label_columns: list[str], per_row: int = 4) -> None:
    """Thumbnails with a few values under each and a link to the sample page."""
    thumbs = tiles.thumbnails_for(table, page)
    records = page.to_pylist()
    for start in range(0, len(records), per_row):
        cols = st.columns(per_row)
        for cell, rec, thumb in zip(
            cols, records[start : start + per_row], thumbs[start : start + per_row], strict=False
        ):
            with cell:
                if thumb:
                    st.image(thumb, width="stretch")
                else:
                    st.caption("(no picture)")
                if rec.get("id") is not None:
                    sample_link(table, rec["id"], n=22)
                badges = tile_badges(rec)
                if badges:
                    st.markdown(badges)
                bits = [f"{c}={_fmt(rec[c])}" for c in label_columns if c in rec and c != "id"]
                if bits:
                    st.caption(" · ".join(bits))


def tile_badges(rec: dict) -> str:
    """Markdown badges of a row's decisions and errors: a red one per rejecting stage with its
    reasons, a green "kept" when every decision keeps it, an orange one per row error."""
    state, why = tiles.verdict(rec)
    out = []
    if state == "rejected":
        out += [f":red-badge[{_badge_text(f'{s}: {r}')}]" for s, r in why]
    elif state == "kept":
        out.append(":green-badge[kept]")
    elif state == "undetermined":
        out.append(":gray-badge[undecided]")
    errs = [k.removesuffix("_error") for k, v in rec.items() if k.endswith("_error") and v]
    out += [f":orange-badge[error: {_badge_text(s)}]" for s in errs]
    return " ".join(out)


def _badge_text(text: str, n: int = 40) -> str:
    """Badge text without the characters markdown would read as its own."""
    text = "".join(ch for ch in str(text) if ch not in "[]*`\\")
    return text if len(text) <= n else text[: n - 1] + "…"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return ",".join(map(str, v[:4])) + ("…" if len(v) > 4 else "")
    return _short(str(v), 24)


# -- captions -----------------------------------------------------------------------------------
SUMMARY_KEYS = ("comprehensive_t2i_caption", "temporal_caption", "caption", "summary", "text")


def parse_caption(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def caption(value: Any) -> None:
    """A structured caption as a reader wants it: the summary first, then each field by name."""
    obj = parse_caption(value)
    if not isinstance(obj, dict):
        st.markdown(str(obj))
        return
    for key in SUMMARY_KEYS:
        if isinstance(obj.get(key), str):
            st.markdown(f"> {obj[key]}")
    for key, val in obj.items():
        if key in SUMMARY_KEYS and isinstance(val, str):
            continue
        st.markdown(f"**{key.replace('_', ' ')}**")
        st.markdown(_md(val))
    with st.expander("raw JSON"):
        st.json(obj)


def _md(val: Any, depth: int = 0) -> str:
    pad = "  " * depth
    if isinstance(val, dict):
        return "\n".join(
            f"{pad}- *{k.replace('_', ' ')}*: {_md(v, depth + 1).lstrip()}"
            if not isinstance(v, dict | list)
            else f"{pad}- *{k.replace('_', ' ')}*:\n{_md(v, depth + 1)}"
            for k, v in val.items()
        )
    if isinstance(val, list):
        if all(not isinstance(v, dict | list) for v in val):
            return pad + ", ".join(map(str, val)) if val else pad + "(none)"
        return "\n".join(
            f"{pad}- {i + 1}.\n{_md(v, depth + 1)}" if isinstance(v, dict | list) else f"{pad}- {v}"
            for i, v in enumerate(val)
        )
    return pad + str(val)


# -- one row's columns, grouped by the stage that wrote them -----------------------------------
def stage_groups(table: str, rec: dict) -> None:
    cols = data.columns(table)
    groups: dict[str, list[data.Column]] = {}
    for c in cols:
        groups.setdefault(c.group, []).append(c)
    for group, members in groups.items():
        meta = next((c for c in members if c.version), None)
        title = group if group != "base" else "base columns"
        if meta:
            title += f"  ·  v{meta.version}" + (f" · {meta.model}" if meta.model else "")
        random = any(c.random_weights for c in members)
        if random:
            title += "  ·  RANDOM WEIGHTS"
        with st.expander(title, expanded=group != "ingest"):
            if random:
                st.warning(
                    f"{group} ran with random weights (allow_random_weights): its outputs are "
                    "test values, not model predictions"
                )
            _group_body(members, rec)
            if meta and meta.facts:
                st.caption(" · ".join(f"{k.removeprefix('sila.')}={v}" for k, v in meta.facts))


def _group_body(members: list[data.Column], rec: dict) -> None:
    by_kind: dict[str, list[data.Column]] = {}
    for c in members:
        by_kind.setdefault(c.kind, []).append(c)
    for c in by_kind.get("error", []):
        if rec.get(c.name):
            st.error(f"{c.name}: {rec[c.name]}")
    for c in by_kind.get("decision", []):
        v = rec.get(c.name)
        if v is None:
            continue
        reasons = rec.get(c.name.removesuffix("_keep") + "_reasons") or []
        verdict = ":green[**kept**]" if v else ":red[**dropped**]"
        st.markdown(
            f"{c.name}: {verdict}" + (f" — reasons: {', '.join(reasons)}" if reasons else "")
        )
    for c in by_kind.get("reasons", []) + by_kind.get("tags", []):
        vals = rec.get(c.name)
        if vals:
            st.markdown(f"{c.name}: " + " ".join(f"`{v}`" for v in vals))
    numbers = [c for c in by_kind.get("number", []) if rec.get(c.name) is not None]
    if numbers:
        mcols = st.columns(min(4, len(numbers)))
        for i, c in enumerate(numbers):
            v = rec[c.name]
            mcols[i % len(mcols)].metric(c.name, f"{v:.4g}" if isinstance(v, float) else f"{v:,}")
    for c in by_kind.get("caption", []):
        if rec.get(c.name):
            st.markdown(f"**{c.name}**")
            caption(rec[c.name])
    rest = [
        c
        for k in ("text", "other", "image", "embedding", "media")
        for c in by_kind.get(k, [])
        if c.name in rec
    ]
    if rest:
        st.dataframe(
            [
                {"column": c.name, "type": c.type, "value": str(data.to_display(rec[c.name]))}
                for c in rest
            ],
            hide_index=True,
            width="stretch",
        )


def plot(chart, height: int) -> None:
    """An Altair chart across the page at `height` pixels (the chart's own height is not
    always honoured once the chart is stretched to the container)."""
    st.altair_chart(chart.properties(height=height), width="stretch", height=height)
