"""`sila run STAGE --dry-run`: the rows and model calls a run would make, before it makes any.

Reads the manifest and the filter columns only; writes nothing (no columns, no job record).
The same counts go into a real run's job record (`metrics.gating`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sila.coordinator.discovery import split_fragments
from sila.coordinator.gating import stage_where
from sila.coordinator.inputs import combine_where


@dataclass
class RunPlan:
    stage: str
    table: str
    fragments: int  # fragments the run would visit
    rows: int  # rows in them
    rows_to_compute: int  # rows passing the stage's gate and the run's --where
    rows_gated: int  # rows the stage's gate skips (no compute, no model call)
    stage_where: str | None  # the gate as resolved now
    run_where: str | None
    model_calls: int | None  # first-attempt model calls (None: the stage calls no model)
    model_calls_saved: int | None  # by the gate
    endpoint: str | None  # where model calls would go

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        calls = "n/a (no model calls)" if self.model_calls is None else str(self.model_calls)
        out = [
            f"dry run of '{self.stage}' on '{self.table}': nothing computed or written",
            f"  fragments to visit: {self.fragments} ({self.rows} rows)",
            f"  rows to compute: {self.rows_to_compute}",
            f"  gate (resolved now): {self.stage_where or 'none'} -> skips {self.rows_gated} rows",
        ]
        if self.run_where:
            out.append(f"  --where: {self.run_where}")
        out.append(f"  model calls: {calls}")
        if self.model_calls_saved is not None:
            out.append(f"  model calls saved by the gate: {self.model_calls_saved}")
        if self.endpoint:
            out.append(f"  endpoint: {self.endpoint}")
        return out


def count_gate(ds, fragments, gate: str | None, run_where: str | None) -> tuple[int, int, int]:
    """(rows, rows gated out, rows to compute) over `fragments` (FragmentRefs)."""
    rows = gated = todo = 0
    both = combine_where(gate, run_where)
    for ref in fragments:
        frag = ds.get_fragment(ref.id)
        n = frag.count_rows()
        rows += n
        passing = frag.count_rows(gate) if gate else n
        gated += n - passing
        todo += frag.count_rows(both) if both else n
    return rows, gated, todo


def gating_summary(stage, ds, fragments=None) -> dict[str, Any] | None:
    """For the job record of a gated stage: the resolved gate and what it saves over
    `fragments` (FragmentRefs the job computes; None: those not yet done). None for stages
    without a gate. `stage` may be bound already (its `where` carries the gate)."""
    if stage.gate() is None:
        return None
    gate = stage_where(stage, ds.schema)
    pending = fragments
    if pending is None:
        _, pending = split_fragments(ds, type(stage).name)
    rows, gated, _ = count_gate(ds, pending, gate, None)
    per_row = _calls_per_row(stage)
    return {
        "where": gate,
        "rows": rows,
        "rows_gated": gated,
        "model_calls_saved": None if per_row is None else gated * per_row,
    }


def _calls_per_row(stage) -> int | None:
    """The stage's declared model calls per row; None for a stage that makes none."""
    return int(stage.model_calls_per_row()) or None


def plan_run(lake, spec, options=None, **overrides: Any) -> RunPlan:
    """What `lake.run(spec, options)` would do now (same options), without doing it."""
    from sila.coordinator.options import RunOptions

    from sila.recipe import load_recipe, stage_settings
    from sila.registry import resolve

    run = RunOptions.build(options, **overrides)
    cls = resolve(spec)
    conf = stage_settings(load_recipe(run.recipe), cls.name, run.settings)
    stage = cls(**conf)
    ds = lake.table(cls.table)
    done, pending = split_fragments(ds, stage, lake.store, stage.work_identity())  # as a run
    run_where = run.where
    if run.recompute:
        pending = done + pending
    elif run.retry_errors:
        err = cls.error_column()
        pending = done if err in ds.schema.names else []
        run_where = combine_where(run_where, f"{err} IS NOT NULL")
    gate = stage_where(stage, ds.schema)
    rows, gated, todo = count_gate(ds, pending, gate, run_where)
    per_row = _calls_per_row(stage)
    endpoint = run.endpoint_url or next(iter(stage.endpoint_urls()), None)
    if endpoint is None and cls.endpoint is not None:
        endpoint = "launched per node: " + " ".join(cls.endpoint.command)
    return RunPlan(
        stage=cls.name,
        table=cls.table,
        fragments=len(pending),
        rows=rows,
        rows_to_compute=todo,
        rows_gated=gated,
        stage_where=gate,
        run_where=run.where,
        model_calls=None if per_row is None else todo * per_row,
        model_calls_saved=None if per_row is None else gated * per_row,
        endpoint=endpoint,
    )


def endpoint_skip_reason(spec, recipe: str | None = None, endpoint_url: str | None = None):
    """Why a stage that needs a model endpoint cannot run here (None: it can): no URL given
    (`--endpoint-url`, the recipe's `endpoint_urls`) and its server command is not installed.
    The demo prints it and goes on."""
    import shutil

    from sila.recipe import load_recipe, stage_settings
    from sila.registry import resolve

    cls = resolve(spec)
    if cls.endpoint is None or endpoint_url:
        return None
    if cls(**stage_settings(load_recipe(recipe), cls.name, None)).endpoint_urls():
        return None
    launcher = cls.endpoint.command[0]
    if shutil.which(launcher):
        return None
    return (
        f"no endpoint (set --endpoint-url URL; `{launcher}` is not installed to start one): "
        f"skipped, nothing captioned"
    )
