"""`sila whatif STAGE --set rule=value`: what changed decision rules would keep and reject,
computed from the stored signal columns without running the stage.

A decision stage (`sila.filters.Filter`) is arithmetic over columns the lake already holds, so
its answer under other rules is the same `compute` the run would call, over the same rows the
run would compute (its declared inputs and lookups, its `where` and gate), read in one scan.
"Before" is what the lake stores now (`<stage>_keep` / `<stage>_reasons`); "after" is the
prediction. `--apply` runs the stage with the new rules as a normal run: its version follows its
rules, so only it recomputes, and its stored answer equals the prediction.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sila.coordinator.discovery import as_run_binds, stage_class_of
from sila.coordinator.ops.jobs import JobLog

from sila.errors import SilaError
from sila.filters import Filter, SettingsVersion
from sila.recipe import load_recipe, stage_settings
from sila.schema import owner

WHATIF_SCHEMA = "sila.whatif/1"  # docs/first-hour-json.md; bump when a key changes meaning
# Columns a what-if breaks its counts down by, where the table (or its source row) has them.
GROUP_COLUMNS = ("media_kind", "embodiment", "bucket", "split")
DURATION_COLUMNS = ("duration_s", "video_duration_s")
EVAL_CHUNK = 8192  # rows per compute call: bounds the Python row dicts held at once


@dataclass
class Tally:
    """Kept / rejected / undetermined rows (and hours) of one group."""

    kept: int = 0
    rejected: int = 0
    undetermined: int = 0
    kept_hours: float = 0.0
    rejected_hours: float = 0.0

    def add(self, keep: bool | None, hours: float) -> None:
        """Count one row's decision."""
        if keep is True:
            self.kept, self.kept_hours = self.kept + 1, self.kept_hours + hours
        elif keep is False:
            self.rejected, self.rejected_hours = self.rejected + 1, self.rejected_hours + hours
        else:
            self.undetermined += 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form, hours rounded."""
        return {
            "kept": self.kept,
            "rejected": self.rejected,
            "undetermined": self.undetermined,
            "kept_hours": round(self.kept_hours, 4),
            "rejected_hours": round(self.rejected_hours, 4),
        }


@dataclass
class WhatIf:
    """The effect of `changes` on one decision stage: totals, per-group counts, flipped rows."""

    stage: str
    table: str
    changes: dict[str, Any]
    rules_before: dict[str, Any]
    rules_after: dict[str, Any]
    version_before: str
    version_after: str
    rows: int
    before: Tally
    after: Tally
    groups: dict[str, dict[str, dict[str, Tally]]] = field(default_factory=dict)
    flips: list[dict[str, Any]] = field(default_factory=list)
    flips_total: int = 0
    seconds: float = 0.0
    predicted: dict[str, bool | None] = field(default_factory=dict, repr=False)
    stage_class: Any = field(default=None, repr=False)  # found again through the columns' spec

    def to_dict(self) -> dict[str, Any]:
        """The `--json` form (schema `sila.whatif/1`, docs/first-hour-json.md)."""
        return {
            "schema": WHATIF_SCHEMA,
            "stage": self.stage,
            "table": self.table,
            "changes": self.changes,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "rows": self.rows,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "groups": {
                col: {v: {k: t.to_dict() for k, t in ba.items()} for v, ba in vals.items()}
                for col, vals in self.groups.items()
            },
            "flips_total": self.flips_total,
            "flips": self.flips,
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        """Short lines for people (fit in 80 columns)."""
        b, a = self.before, self.after
        changed = ", ".join(f"{k}={v!r}" for k, v in self.changes.items())
        out = [
            f"{self.stage} with {changed} ({self.rows} rows, {self.seconds:.2f} s):",
            f"  kept      {b.kept:>8} -> {a.kept:<8} ({a.kept - b.kept:+d})",
            f"  rejected  {b.rejected:>8} -> {a.rejected:<8} ({a.rejected - b.rejected:+d})",
            f"  undecided {b.undetermined:>8} -> {a.undetermined:<8}",
            f"  kept hours {b.kept_hours:.3f} -> {a.kept_hours:.3f}",
        ]
        for col, vals in self.groups.items():
            moved = [
                f"    {v[:30]:<30} kept {ba['before'].kept} -> {ba['after'].kept}"
                for v, ba in sorted(vals.items())
                if ba["before"].to_dict() != ba["after"].to_dict()
            ]
            out += [f"  by {col}:", *moved] if moved else []
        out.append(f"  {self.flips_total} row(s) flip" + (":" if self.flips else ""))
        for f in self.flips:
            why = ", ".join(f["reasons_after"] or f["reasons_before"]) or "-"
            out.append(f"    {f['id']}  {_word(f['before'])} -> {_word(f['after'])}  {why}")
        if self.flips_total > len(self.flips):
            out.append(f"    ... {self.flips_total - len(self.flips)} more (--json lists them)")
        out.append(f"apply: sila whatif {self.stage} {_set_args(self.changes)} --apply")
        return out


def _word(keep: bool | None) -> str:
    return {True: "kept", False: "rejected", None: "undecided"}[keep]


def _set_args(changes: dict[str, Any]) -> str:
    return " ".join(
        f"--set {k}={v!r}" if isinstance(v, str) else f"--set {k}={v}" for k, v in changes.items()
    )


def decision_table(lake, stage: str) -> str:
    """The table holding `stage`'s `<stage>_keep` decision column; names the fix if none."""
    for name in lake.tables():
        ds = lake.table(name)
        if any(owner(f) == stage and f.name == f"{stage}_keep" for f in ds.schema):
            return name
    raise SilaError(
        f"no decision column '{stage}_keep' in this lake: run the stage first "
        f"(`sila run {stage}`); what-if needs a decision stage's stored inputs"
    )


def latest_settings(lake, stage: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """The settings of `stage`'s latest job (what its stored decisions were computed with), as
    the stage takes them. Job records hold a list setting as its repr (`coordinator.run`), so a
    string where the default is a list or mapping is read back as a Python literal."""
    jobs = [j for j in JobLog(lake.store).all() if j.get("stage") == stage and j.get("settings")]
    out: dict[str, Any] = {}
    for k, v in (jobs[-1]["settings"] if jobs else {}).items():
        if k not in defaults:
            continue
        if isinstance(v, str) and isinstance(defaults[k], list | tuple | dict):
            try:
                v = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                continue  # not a literal: the default stands
        out[k] = v
    return out


def parse_changes(stage: str, changes: list[str] | dict[str, Any], known: dict[str, Any]) -> dict:
    """`["quality.min_motion=0.5", "max_frozen_ratio=0.3"]` -> settings; unknown keys refused."""
    out = stage_settings({}, stage, changes)
    if not out:
        raise SilaError(
            f"name a rule to change, e.g. --set {stage}.{next(iter(known), 'rule')}=..."
        )
    unknown = sorted(set(out) - set(known))
    if unknown:
        raise SilaError(
            f"stage '{stage}' has no rule(s) {unknown}; its rules: {', '.join(sorted(known))}"
        )
    return out


def what_if(
    lake,
    stage: str,
    changes: list[str] | dict[str, Any],
    *,
    recipe: str | None = None,
    flips_shown: int = 20,
) -> WhatIf:
    """Predict `stage`'s decisions under its current rules changed by `changes`."""
    t0 = time.perf_counter()
    table = decision_table(lake, stage)
    ds = lake.table(table)
    cls = stage_class_of(ds, stage)
    if not (isinstance(cls, type) and issubclass(cls, SettingsVersion)):
        raise SilaError(
            f"'{stage}' is not a decision stage with rules (a sila.filters.Filter): "
            "what-if changes rules, and this stage's columns are not computed from any"
        )
    current = {**cls.settings, **stage_settings(load_recipe(recipe), stage, None)}
    current.update(latest_settings(lake, stage, cls.settings))
    delta = parse_changes(stage, changes, cls.settings)
    before_stage, after_stage = cls(**current), as_run_binds(ds, cls(**{**current, **delta}))
    data = read_inputs(lake, ds, after_stage)
    keep_after, reasons_after = evaluate(after_stage, data)
    ids = data.column("id").to_pylist()
    keep_before = data.column(f"{stage}_keep").to_pylist()
    reasons_before = data.column(f"{stage}_reasons").to_pylist()
    hours = _hours(data)
    result = WhatIf(
        stage=stage,
        table=table,
        changes=delta,
        rules_before=current,
        rules_after={**current, **delta},
        version_before=before_stage.resolved_version(),
        version_after=after_stage.resolved_version(),
        rows=data.num_rows,
        before=_tally(keep_before, hours),
        after=_tally(keep_after, hours),
        predicted=dict(zip(ids, keep_after, strict=True)),
        stage_class=cls,
    )
    for col in (c for c in GROUP_COLUMNS if c in data.column_names):
        result.groups[col] = _by_group(data.column(col).to_pylist(), keep_before, keep_after, hours)
    for i, (b, a) in enumerate(zip(keep_before, keep_after, strict=True)):
        if b != a:
            result.flips_total += 1
            if len(result.flips) < flips_shown:
                result.flips.append(
                    {
                        "id": ids[i],
                        "before": b,
                        "after": a,
                        "reasons_before": reasons_before[i] or [],
                        "reasons_after": reasons_after(i),
                    }
                )
    result.seconds = time.perf_counter() - t0
    return result


def read_inputs(lake, ds, stage) -> pa.Table:
    """The rows the stage's run computes (its `where`, gate included) with the columns it
    declares (own inputs, lookups), the stored decision and the grouping columns, in one scan."""
    names = set(ds.schema.names)
    extra = [c for c in ("id", f"{stage.name}_keep", f"{stage.name}_reasons") if c in names]
    extra += [c for c in (*GROUP_COLUMNS, *DURATION_COLUMNS, "source_id") if c in names]
    cols = list(dict.fromkeys([*extra, *stage.input_columns()]))
    data = ds.to_table(columns=cols, filter=stage.where)
    for lk in stage.lookups:  # declared reads of other tables arrive as `<table>.<column>`
        data = _join(data, lake.table(lk.table), lk.key, lk.on, lk.columns, prefix=f"{lk.table}.")
    if "embodiment" not in names and "source_id" in names and "sources" in lake.tables():
        src = lake.table("sources")
        if "embodiment" in src.schema.names:  # a clip's embodiment is its source's
            data = _join(data, src, "source_id", "id", ("embodiment",), prefix="")
    return data


def _join(data: pa.Table, other, key: str, on: str, columns, prefix: str) -> pa.Table:
    right = other.to_table(columns=[on, *columns])
    right = right.rename_columns(["__on", *(prefix + c for c in columns)])
    return data.join(right, keys=key, right_keys="__on", join_type="left outer")


def evaluate(stage, data: pa.Table) -> tuple[list[bool | None], Callable[[int], list[str]]]:
    """`stage`'s keep for every row of `data`, and the reasons of row i on demand. Keep comes
    from the filter's vectorised `keep_column` where it offers one, else from the run's own
    `compute`; reasons (only wanted for the rows a what-if lists) from `compute` on that row."""
    cols = [*stage.input_columns(), *(n for lk in stage.lookups for n in lk.names())]
    data = data.select(list(dict.fromkeys(c for c in cols if c in data.column_names)))
    k, r = f"{stage.name}_keep", f"{stage.name}_reasons"

    def reasons_of(i: int) -> list[str]:
        return stage.compute(data.slice(i, 1).to_batches()[0])[r][0] or []

    keep = stage.keep_column(data) if isinstance(stage, Filter) else None
    if keep is not None:
        return list(keep), reasons_of
    keep, reasons = [], []
    for batch in data.to_batches(max_chunksize=EVAL_CHUNK):
        out = stage.compute(batch)
        keep += out[k]
        reasons += out[r]
    return keep, lambda i: reasons[i] or []


def _hours(data: pa.Table) -> list[float]:
    col = next((c for c in DURATION_COLUMNS if c in data.column_names), None)
    if col is None:
        return [0.0] * data.num_rows
    return pc.divide(pc.fill_null(data.column(col).cast(pa.float64()), 0.0), 3600.0).to_pylist()


def _tally(keep: list[bool | None], hours: list[float]) -> Tally:
    t = Tally()
    for k, h in zip(keep, hours, strict=True):
        t.add(k, h)
    return t


def _by_group(values, before, after, hours) -> dict[str, dict[str, Tally]]:
    out: dict[str, dict[str, Tally]] = {}
    for v, b, a, h in zip(values, before, after, hours, strict=True):
        g = out.setdefault(str(v), {"before": Tally(), "after": Tally()})
        g["before"].add(b, h)
        g["after"].add(a, h)
    return out


def apply(lake, result: WhatIf, **run_options: Any) -> dict[str, Any]:
    """Run the decision stage with the what-if's rules as a normal run (only it recomputes)."""
    return lake.run(result.stage_class, settings=dict(result.rules_after), **run_options)
