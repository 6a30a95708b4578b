"""Around a stage's `setup()`: what the platform hands it, and what it records afterwards.

Before setup the platform fills the context from the table, so a stage never opens one:
`ctx.facts` (every stage's `sila.*` column facts on the stage's table) and, for a global stage,
`ctx.fit` (the current fit). After setup it stamps the stage's declared `column_facts()` onto
the stage's columns (`sila.column_stamp.stamp_columns`: retried on a concurrent commit).
Every executor calls `set_up` where it used to call the stage's setup.
"""

from __future__ import annotations

from sila.coordinator.steps import setup_stage

from sila.column_stamp import stamp_columns, table_facts
from sila.global_stage import FitStore
from sila.lake import Lake
from sila.stage import Stage, StageContext


def fill_context(lake: Lake, stage: Stage, ctx: StageContext) -> StageContext:
    """`ctx` with the facts (and, for a global stage, the fit) the stage may read in setup."""
    if lake.has_table(stage.table):
        ctx.facts = table_facts(lake.table(stage.table).schema)
    if stage.is_global:
        ctx.fit = FitStore(lake, stage.table, stage.name).current()
    return ctx


def stamp_facts(lake: Lake, stage: Stage) -> None:
    """Record what `setup` learned (`stage.column_facts()`) on the stage's columns."""
    stamp_columns(lake, stage.table, stage.name, stage.column_facts())


def set_up(lake: Lake, stage: Stage, ctx: StageContext) -> None:
    """Fill the context, run the stage's setup (its failure is the job's), stamp its facts."""
    setup_stage(stage, fill_context(lake, stage, ctx))
    stamp_facts(lake, stage)
