"""Overview: tables, versions over time, per stage and per column coverage, leases and jobs."""

from __future__ import annotations

import time

import altair as alt
import pandas as pd
import streamlit as st
from sila.viewer import data, lake_state
from sila.viewer.components import missing, plot

STAGE_KEYS = (
    ("fragments_done", "done"),
    ("fragments_pending", "pending"),
    ("fragments_partial", "partial"),
    ("fragments_deferred", "deferred"),
    ("fragments_stale", "stale"),
    ("errors", "row errors"),
)


def render() -> None:
    st.title("Overview")
    names = data.tables()
    if not names:
        missing("The lake has no table: its sources table is", None, "sources")
        return
    status = lake_state.status()
    tables = status.get("tables", {})
    cols = st.columns(len(names))
    for col, name in zip(cols, names, strict=True):
        t = tables.get(name, {})
        col.metric(f"{name}", f"{t.get('rows', 0):,} rows")
        frags = t.get("fragments", 0)
        col.caption(
            f"{frags:,} fragment{'s' if frags != 1 else ''} · version {t.get('version', '?')}"
        )
    if "clips" not in names:
        missing("The clips table is", None, "clips")
    _stages(tables)
    _not_run(names, tables)
    _versions(names)
    _column_coverage(names)
    _live()


def _stages(tables: dict) -> None:
    st.subheader("Stages")
    rows = []
    for tname, t in tables.items():
        for stage, s in (t.get("stages") or {}).items():
            rec = {"table": tname, "stage": stage}
            s = {"fragments_stale": s.get("stale_fragments", 0), **s}  # older status: one name
            for key, label in STAGE_KEYS:
                if key in s:
                    rec[label] = s.get(key) or 0
            keep = s.get("keep") or {}
            if keep:
                rate = keep.get("keep_rate")
                rec["kept"] = f"{keep.get('kept', 0):,} / {keep.get('rejected', 0):,} rejected" + (
                    f" ({rate:.0%})" if rate is not None else ""
                )
            rec["deferred on"] = ", ".join(s.get("deferred_on") or []) or None
            rec["random weights"] = bool(s.get("random_weights"))
            cov = s.get("coverage")
            rec["coverage"] = cov if cov is not None else 0.0
            ver = s.get("version")
            rec["version"] = ", ".join(map(str, ver)) if isinstance(ver, list) else ver
            now = s.get("current_version")
            rec["code version"] = now
            rows.append(rec)
    if not rows:
        st.caption("no stage has run yet")
        return
    df = pd.DataFrame(rows)
    df["label"] = df["table"] + "/" + df["stage"]
    chart = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("coverage:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            y=alt.Y("label:N", title=None, sort=None),
            color=alt.Color("table:N"),
            tooltip=[c for c in df.columns if c != "label"],
        )
    )
    plot(chart, 70 + 26 * len(df))  # the height includes axes and padding
    st.dataframe(
        df.drop(columns=["label"]),
        hide_index=True,
        width="stretch",
        column_config={"coverage": st.column_config.ProgressColumn(min_value=0, max_value=1)},
    )
    for r in rows:
        if r.get("stale"):
            st.warning(
                f"{r['table']}/{r['stage']}: {r['stale']} stale fragment(s), computed by other "
                f"code, settings or upstream values than now (columns v{r['version']}, code "
                f"v{r['code version']}): `sila run {r['stage']} --recompute --lake {data.lake_uri()}`"
            )
        if r.get("deferred"):
            st.caption(
                f"{r['table']}/{r['stage']}: {r['deferred']} fragment(s) wait for an upstream "
                f"stage ({r.get('deferred on') or 'not done'})"
            )
        if r.get("random weights"):
            st.warning(
                f"{r['table']}/{r['stage']} ran with RANDOM weights (allow_random_weights): "
                "its values test the mechanics only"
            )


def _not_run(names: list[str], tables: dict) -> None:
    """Registered stages whose table exists but which have never written a column."""
    from sila.viewer.hints import _producers

    ran = {s for t in tables.values() for s in (t.get("stages") or {})}
    todo = sorted(
        {(stage, table) for stage, table in _producers().values() if table in names} - set()
    )
    todo = [(s, t) for s, t in todo if s not in ran]
    if todo:
        st.caption("Not run yet on this lake:")
        st.code(
            "\n".join(f"sila run {s} --lake {data.lake_uri()}   # on {t}" for s, t in todo),
            language="bash",
        )


def _versions(names: list[str]) -> None:
    st.subheader("Versions over time")
    frames = []
    for name in names:
        v = pd.DataFrame(lake_state.versions(name))
        if not v.empty:
            v["table"] = name
            frames.append(v)
    if not frames:
        return
    df = pd.concat(frames)
    chart = (
        alt.Chart(df)
        .mark_line(point=True, interpolate="step-after")
        .encode(
            x=alt.X("time:T", axis=alt.Axis(format="%b %d %H:%M:%S", labelAngle=0)),
            y=alt.Y("rows:Q"),
            color="table:N",
            tooltip=["table", "version", "time", "rows", "fragments"],
        )
    )
    plot(chart, 220)
    st.caption(
        " · ".join(f"{n}: {len(df[df.table == n])} versions" for n in names)
        + " (each point is a commit: ingests add rows, stages add columns)"
    )


def _column_coverage(names: list[str]) -> None:
    st.subheader("Column coverage (from fragment metadata)")
    for name, tab in zip(names, st.tabs(names), strict=True):
        with tab:
            df = pd.DataFrame(lake_state.column_coverage(name))
            if df.empty:
                st.caption("no columns")
                continue
            chart = (
                alt.Chart(df)
                .mark_bar()
                .encode(
                    x=alt.X(
                        "coverage:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")
                    ),
                    y=alt.Y("column:N", sort=None, title=None),
                    color=alt.Color("stage:N"),
                    tooltip=["column", "stage", "rows", alt.Tooltip("coverage:Q", format=".1%")],
                )
            )
            plot(chart, 70 + 20 * len(df))


@st.fragment(run_every=5)
def _live() -> None:
    st.subheader("Live leases and recent jobs")
    leases = lake_state.leases()
    if leases:
        st.dataframe(pd.DataFrame(leases), hide_index=True, width="stretch")
    else:
        st.caption("no live lease: nothing is running on this lake right now")
    jobs = lake_state.jobs()
    if not jobs:
        st.caption("no job records yet")
        return
    rows, pools = [], []
    for j in jobs:
        p = j.get("progress") or {}
        end = j.get("ended_at") or time.time()
        rows.append(
            {
                "job": j.get("job"),
                "stage": j.get("stage"),
                "table": j.get("table"),
                "state": j.get("state"),
                "executor": j.get("executor"),
                "workers": j.get("workers"),
                "fragments": f"{p.get('fragments_done', 0)}/{p.get('fragments_total', 0)}",
                "rows": p.get("rows"),
                "row errors": p.get("row_errors"),
                "seconds": round(end - (j.get("started_at") or end), 1),
                "message": j.get("message"),
            }
        )
        for pool, m in ((j.get("metrics") or {}).get("pools") or {}).items():
            pools.append({"job": j.get("job"), "pool": pool, **{k: v for k, v in m.items()}})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if pools:
        st.caption("per-pool figures (Ray executor)")
        st.dataframe(pd.DataFrame(pools), hide_index=True, width="stretch")


if __name__ == "__main__":
    render()
