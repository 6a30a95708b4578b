"""`assign_split`: every row's train/val/test split, by group, so no group spans two splits.

Rows are grouped by a column (`by`: episode_id, session_id, source_id, ...), read as an ordinary
input of each row, so rows appended while the job runs, or later, join their group. A global
stage (fit -> assign): in the default hash mode the fit is empty and a group's split is a pure
function of (seed, group value), so a re-run gives the same answer. `time_column` switches to a
chronological split, which needs every group's earliest time, a whole-table read: the fit orders
the groups by it and gives the first `train` share to train, then val, then test. Rows appended
later are assigned against the stored fit (their group's split); a group the fit has never seen
is a row error naming the refit (`--recompute`), never a guess that could put one group in two
splits. Rows already assigned keep their split.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, ClassVar

import pyarrow as pa

from sila.errors import RowError, SilaError
from sila.global_stage import Fit, FitContext, GlobalStage
from sila.stage import StageContext


def hash_split(group: str, seed: int, ratios: dict[str, float]) -> str:
    """Deterministic split of one group: a uniform draw from the group's hash."""
    h = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    acc = 0.0
    names = list(ratios)
    for name in names:
        acc += ratios[name]
        if u < acc:
            return name
    return names[-1]


def check_ratios(ratios: dict[str, float]) -> dict[str, float]:
    if not ratios or any(not isinstance(v, int | float) or v < 0 for v in ratios.values()):
        raise SilaError(f"assign_split: ratios must be non-negative numbers, got {ratios!r}")
    total = sum(ratios.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise SilaError(f"assign_split: ratios must sum to 1, got {total:g} ({ratios})")
    return {str(k): float(v) for k, v in ratios.items()}


def chronological_cutoffs(times: dict[str, float], ratios: dict[str, float]) -> dict[str, str]:
    """Group -> split, groups ordered by their earliest time (ties by group value)."""
    order = sorted(times, key=lambda g: (times[g], g))
    out: dict[str, str] = {}
    n = len(order)
    start = 0
    names = list(ratios)
    for i, name in enumerate(names):
        end = n if i == len(names) - 1 else start + round(ratios[name] * n)
        for g in order[start:end]:
            out[g] = name
        start = end
    return out


def _missing_column(lake: Any, table: str, setting: str, col: str, names: list[str]) -> str:
    """The error for a setting naming a column the table lacks: which setting, the columns the
    table really has, and where the column lives when it is another table's (e.g. an episode's
    `session_id` is a column of `sources`, not of its windows)."""
    elsewhere = [t for t in lake.tables() if t != table and col in lake.table(t).schema.names]
    where = f"; '{col}' is a column of {', '.join(elsewhere)}, not of {table}" if elsewhere else ""
    return (
        f"assign_split: setting '{setting}' names column '{col}', which {table} does not "
        f"have{where}; {table} has: {', '.join(names)}. Name one of them with "
        f"--set assign_split.{setting}=COLUMN"
    )


class AssignSplit(GlobalStage):
    """Leakage-free split assignment by group (hash or chronological)."""

    name = "assign_split"
    table = "clips"
    inputs: ClassVar[list[str]] = []  # the group (and time) columns come from the settings
    outputs = [pa.field("split", pa.string()), pa.field("split_group", pa.string())]
    version = "2"
    settings = {
        "by": "source_id",
        "ratios": {"train": 0.9, "val": 0.05, "test": 0.05},
        "seed": 0,
        "time_column": None,
    }

    def input_columns(self) -> list[str]:
        """The group column, and the time column in chronological mode."""
        tcol = self.config["time_column"]
        return [*self.inputs, self.config["by"], *([tcol] if tcol else [])]

    def fit(self, lake: Any, ctx: FitContext) -> Fit:
        """Hash mode: nothing to learn. Chronological: every group's split, from the earliest
        time of each group over the whole table."""
        ratios = check_ratios(dict(self.config["ratios"]))
        by, tcol = self.config["by"], self.config["time_column"]
        ds = lake.table(self.table)
        for setting, col in (("by", by), ("time_column", tcol)):
            if col and col not in ds.schema.names:
                raise SilaError(_missing_column(lake, self.table, setting, col, ds.schema.names))
        if not tcol:
            return Fit(summary={"mode": "hash", "seed": int(self.config["seed"])})
        tbl = ds.to_table(columns=[by, tcol]).group_by(by).aggregate([(tcol, "min")])
        times = {
            str(g): float(v)
            for g, v in zip(tbl[by].to_pylist(), tbl[f"{tcol}_min"].to_pylist(), strict=True)
            if g is not None and v is not None
        }
        groups = chronological_cutoffs(times, ratios)
        counts = {name: sum(1 for s in groups.values() if s == name) for name in ratios}
        return Fit(
            files={"groups.json": json.dumps(groups, sort_keys=True).encode()},
            summary={
                "mode": "time",
                "time_column": tcol,
                "groups": len(groups),
                "per_split": counts,
            },
        )

    def load_fit(self, fit: Fit, ctx: StageContext) -> None:
        """The ratios, and in chronological mode the fitted group -> split map."""
        self.ratios = check_ratios(dict(self.config["ratios"]))
        raw = fit.files.get("groups.json")
        self.fixed: dict[str, str] = json.loads(raw) if raw else {}

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row's split from its group; a row without a group value is a row error."""
        by = self.config["by"]
        g = row.get(by)
        if g is None:
            raise RowError(f"no '{by}' value: the row cannot join a group")
        g = str(g)
        if not self.config["time_column"]:
            return {"split": hash_split(g, int(self.config["seed"]), self.ratios), "split_group": g}
        if g not in self.fixed:
            raise RowError(
                f"group '{g}' arrived after the chronological split was fitted; refit with "
                "`sila run assign_split --recompute` (every group is split again)"
            )
        return {"split": self.fixed[g], "split_group": g}
