"""`assign_split`: every row's train/val/test split, by group, so no group spans two splits.

Rows are grouped by a column (`by`: episode_id, session_id, source_id, ...). A group's split
is a pure function of (seed, group value) in the default mode, so rows appended later join
their group's split and a re-run gives the same answer. `time_column` switches to a
chronological split: groups ordered by their earliest time, the first `train` share of them
to train, then val, then test (the cut-offs are taken from the table when the job starts;
rows already assigned keep their split).
"""

from __future__ import annotations

import hashlib
import math

import pyarrow as pa

from sila.errors import SilaError
from sila.stage import Stage, StageContext


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


class AssignSplit(Stage):
    """Leakage-free split assignment by group (hash or chronological)."""

    name = "assign_split"
    table = "clips"
    inputs = ["id"]
    outputs = [pa.field("split", pa.string()), pa.field("split_group", pa.string())]
    version = "1"
    settings = {
        "by": "source_id",
        "ratios": {"train": 0.9, "val": 0.05, "test": 0.05},
        "seed": 0,
        "time_column": None,
    }

    def setup(self, ctx: StageContext) -> None:
        self.ratios = check_ratios(dict(self.config["ratios"]))
        by, tcol = self.config["by"], self.config["time_column"]
        ds = ctx.lake().table(self.table)
        for col in [by, tcol]:
            if col and col not in ds.schema.names:
                raise SilaError(
                    f"assign_split: column '{col}' is not in {self.table} "
                    f"(columns: {', '.join(ds.schema.names)}); set --set assign_split.by=COLUMN"
                )
        cols = ["id", by] + ([tcol] if tcol else [])
        tbl = ds.to_table(columns=cols)
        self.group_of = dict(zip(tbl["id"].to_pylist(), tbl[by].to_pylist(), strict=True))
        self.fixed: dict[str, str] = {}
        if tcol:
            t = tbl.group_by(by).aggregate([(tcol, "min")])
            times = {
                str(g): float(v)
                for g, v in zip(t[by].to_pylist(), t[f"{tcol}_min"].to_pylist(), strict=True)
                if g is not None and v is not None
            }
            self.fixed = chronological_cutoffs(times, self.ratios)

    def compute(self, batch: pa.RecordBatch):
        splits, groups, errors = [], [], []
        for rid in batch["id"].to_pylist():
            g = self.group_of.get(rid)
            if g is None:
                splits.append(None)
                groups.append(None)
                errors.append(f"no '{self.config['by']}' value: the row cannot join a group")
                continue
            g = str(g)
            s = (
                self.fixed.get(g)
                if self.fixed
                else hash_split(g, int(self.config["seed"]), self.ratios)
            )
            splits.append(s)
            groups.append(g)
            errors.append(None)
        return {"split": splits, "split_group": groups, f"{self.name}_error": errors}
