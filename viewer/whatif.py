"""What if: change a decision stage's thresholds and see, before anything runs, what it would
keep and reject (totals, per group, the clips that flip, as tiles). Read-only like every page:
applying is the command it shows (`sila whatif ... --apply`), run where the lake is written."""

from __future__ import annotations

import shlex

import pandas as pd
import streamlit as st
from sila.viewer import data
from sila.viewer.components import grid, missing

FLIPS_SHOWN = 24


@st.cache_data(show_spinner=False, max_entries=128)
def _predict(uri: str, table: str, ver: int, stage: str, changes: tuple) -> dict:
    """The what-if's answer (cached per table version and rules)."""
    from sila.coordinator.ops.whatif import what_if

    return what_if(data.lake(), stage, dict(changes), flips_shown=FLIPS_SHOWN).to_dict()


def decision_stages(table: str) -> dict[str, type]:
    """Decision stages on `table` whose rules the what-if can change, by name."""
    from sila.coordinator.discovery import stage_class_of

    from sila.filters import SettingsVersion

    out = {}
    for c in data.columns(table):
        if c.kind == "decision" and c.stage and c.name == f"{c.stage}_keep":
            cls = stage_class_of(data.dataset(table), c.stage)
            if isinstance(cls, type) and issubclass(cls, SettingsVersion):
                out[c.stage] = cls
    return out


def _rules(stage: str, cls: type) -> dict:
    """The numeric rules of the stage as its latest job ran them (inputs of the panel)."""
    from sila.coordinator.ops.whatif import latest_settings

    current = {**cls.settings, **latest_settings(data.lake(), stage, cls.settings)}
    return {
        k: v for k, v in current.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def render() -> None:
    st.title("What if")
    tables = [t for t in data.tables() if decision_stages(t)]
    if not tables:
        missing("A decision stage (a `<stage>_keep` column with rules) is", "quality_keep", "clips")
        return
    table = st.selectbox("table", tables, key="whatif_table")
    stages = decision_stages(table)
    stage = st.selectbox("decision stage", sorted(stages), key="whatif_stage")
    rules = _rules(stage, stages[stage])
    st.caption("change a rule; the prediction uses the stored signals, nothing runs")
    changes = {}
    cols = st.columns(4)
    for i, (k, v) in enumerate(sorted(rules.items())):
        new = cols[i % 4].number_input(k, value=float(v), key=f"whatif_{stage}_{k}", format="%g")
        if new != float(v):
            changes[k] = new
    if not changes:
        st.info("no rule changed yet")
        return
    r = _predict(data.lake_uri(), table, data.version(table), stage, tuple(sorted(changes.items())))
    b, a = r["before"], r["after"]
    m = st.columns(4)
    m[0].metric("kept", a["kept"], a["kept"] - b["kept"])
    m[1].metric("rejected", a["rejected"], a["rejected"] - b["rejected"], delta_color="inverse")
    m[2].metric(
        "kept hours", round(a["kept_hours"], 3), round(a["kept_hours"] - b["kept_hours"], 3)
    )
    m[3].metric("rows that flip", r["flips_total"])
    st.caption(f"{r['rows']:,} rows judged in {r['seconds']:.2f} s")
    for col, vals in r["groups"].items():
        df = pd.DataFrame(
            [
                {col: v, "kept before": g["before"]["kept"], "kept after": g["after"]["kept"],
                 "rejected before": g["before"]["rejected"], "rejected after": g["after"]["rejected"]}
                for v, g in sorted(vals.items())
            ]
        )  # fmt: skip
        st.markdown(f"**by {col}**")
        st.dataframe(df, hide_index=True, width="stretch")
    sets = " ".join(f"--set {stage}.{k}={v:g}" for k, v in changes.items())
    st.markdown("**apply** (runs the decision stage alone with these rules):")
    st.code(f"sila whatif {stage} {sets} --apply --lake {shlex.quote(data.lake_uri())}", "bash")
    flips = [f["id"] for f in r["flips"]]
    if flips:
        st.markdown(f"**rows that flip** (first {len(flips)} of {r['flips_total']})")
        import pyarrow as pa

        page = data.rows_by_ids(table, flips, _tile_columns(table))
        word = {True: "kept", False: "rejected", None: "undecided"}
        moved = {f["id"]: f"{word[f['before']]} → {word[f['after']]}" for f in r["flips"]}
        page = page.append_column("flip", pa.array([moved[i] for i in page["id"].to_pylist()]))
        grid(table, page, ["flip"])


def _tile_columns(table: str) -> list[str]:
    # the stored decisions are "before": a flipped tile says before -> after instead
    wanted = ["source_id", "thumbnail", "duration_s"]
    return [c for c in wanted if data.has_column(table, c)]


if __name__ == "__main__":
    render()
