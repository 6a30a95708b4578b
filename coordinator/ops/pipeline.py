"""`sila pipeline run RECIPE`: every stage of a recipe, in the order its data dependencies give.

The plan (order, and when each stage may start) is `pipeline_plan`'s. Stages whose dependencies
allow it run at the same time as separate lease-coordinated jobs: a downstream enrich job takes
the fragments its upstream has already committed (the coordinator defers the rest) and runs
again until every upstream job has ended, so one pass of the pipeline leaves nothing to do.
Before each job the stage's work is judged from metadata (`run.due_work`): a stage with nothing
to do starts no job, loads no model and writes no job record. A stage whose inputs do not exist
on the lake (and that no stage of the run writes) has nothing to do: it is skipped with the
reason, never a failure.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sila.coordinator.ops.pipeline_plan import (
    Node,
    decision_outputs,
    missing_reads,
    overlap,
    plan,
    read_columns,
    recipe_stages,
    select,
    tie_columns_missing,
    written_columns,
)
from sila.coordinator.run import due_work

from sila.errors import SilaError
from sila.recipe import load_recipe

log = logging.getLogger(__name__)

__all__ = [
    "Node",
    "StageOutcome",
    "decision_outputs",
    "plan",
    "plan_pipeline",
    "read_columns",
    "recipe_stages",
    "run_pipeline",
    "select",
    "written_columns",
]


@dataclass
class StageOutcome:
    """What one stage of a pipeline run did: its jobs and their summed progress."""

    stage: str
    state: str = "waiting"  # waiting | running | succeeded | failed | skipped
    jobs: list[str] = field(default_factory=list)
    fragments: int = 0
    rows: int = 0
    row_errors: int = 0
    children: int = 0  # rows an explode stage added to its child table
    model_calls_saved: int = 0  # rows a gate excluded x the stage's model calls per row
    polls: int = 0  # times its work was judged (from metadata; a job only when some was due)
    seconds: float = 0.0
    message: str = ""

    def add(self, job: dict) -> None:
        """Sum one job record into the outcome."""
        p = job.get("progress", {})
        self.jobs.append(job.get("job", ""))
        self.fragments += p.get("fragments_done", 0)
        self.rows += p.get("rows", 0)
        self.row_errors += p.get("row_errors", 0)
        self.children += p.get("children", 0)
        self.model_calls_saved += (job.get("metrics", {}).get("gating") or {}).get(
            "model_calls_saved"
        ) or 0


def _nodes(doc: dict, only, until, skip) -> list[Node]:
    nodes = select(plan(recipe_stages(doc), doc), only, until)
    names = {n.name for n in nodes}
    unknown = sorted(set(skip or []) - names)
    if unknown:
        raise SilaError(f"--skip {unknown[0]}: not a stage of this pipeline ({', '.join(names)})")
    return nodes


def run_pipeline(
    lake,
    recipe: str,
    *,
    only: list[str] | None = None,
    until: str | None = None,
    skip: list[str] | None = None,
    concurrent: bool = True,
    poll_s: float = 0.5,
    on_event=None,
    random_weights: bool | list[str] = False,
    **run_options: Any,
) -> dict:
    """Run a recipe's stages; returns {"stages": [...outcomes], "ok": bool, "seconds": s}.

    Each stage is zero or more ordinary `sila run` jobs (same options, same job records): one
    whenever its metadata says work is due. A stage in `skip`, one that needs a model endpoint
    it cannot have here, or one whose inputs do not exist on the lake is skipped with the
    reason; a failed stage skips the stages after it. `random_weights`: True, or the names of
    the stages allowed to run with random weights (recorded in their columns' metadata)."""
    doc = load_recipe(recipe)
    pipeline_id = f"{time.strftime('%Y%m%dT%H%M%S')}-pipeline-{uuid.uuid4().hex[:6]}"
    run_options.setdefault("progress", False)
    nodes = _nodes(doc, only, until, skip)
    by = {n.name: n for n in nodes}
    outcomes = {n.name: StageOutcome(n.name) for n in nodes}
    ended = {n.name: threading.Event() for n in nodes}
    t0 = time.monotonic()
    say = on_event or (lambda *_: None)

    def one(node: Node) -> None:
        out = outcomes[node.name]
        ups = [by[u] for u in sorted(node.after) if u in by]
        try:
            reason = _skip_reason(node, ups, skip, concurrent, ended, outcomes, recipe, run_options)
            if reason:
                out.state, out.message = "skipped", reason
                say("skip", node.name, out)
                return
            opts = dict(run_options)
            if random_weights is True or (
                isinstance(random_weights, list | tuple | set) and node.name in random_weights
            ):
                opts["allow_random_weights"] = True
            out.state = "running"
            t = time.monotonic()
            reason = _drive(lake, node, ups, ended, outcomes, recipe, opts, poll_s, say)
            out.seconds = round(time.monotonic() - t, 2)
            if reason:
                out.state, out.message = "skipped", reason
                say("skip", node.name, out)
                return
            out.state = "succeeded"
            out.message = out.message or ("" if out.jobs else "nothing to do")
            say("end", node.name, out)
        except Exception as e:  # noqa: BLE001 - reported per stage; the others go on
            out.state, out.message = "failed", f"{type(e).__name__}: {e}"
            say("fail", node.name, out)
        finally:
            ended[node.name].set()

    if concurrent:
        threads = [threading.Thread(target=one, args=(n,), name=f"sila-{n.name}") for n in nodes]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    else:
        for n in nodes:
            one(n)
    ok = not any(o.state == "failed" for o in outcomes.values())
    record = {
        "pipeline": pipeline_id,
        "ok": ok,
        "state": "succeeded" if ok else "failed",
        "recipe": recipe,
        "order": [{"stage": n.name, "after": n.why} for n in nodes],
        "stages": [vars(outcomes[n.name]) for n in nodes],
        "ran": [n.name for n in nodes if outcomes[n.name].jobs],
        "skipped": {n.name: o.message for n in nodes if (o := outcomes[n.name]).state == "skipped"},
        "seconds": round(time.monotonic() - t0, 2),
        "record": f"pipelines/{pipeline_id}.json",
    }
    lake.store.put(record["record"], json.dumps(record, indent=1, default=str).encode())
    return record


def _skip_reason(node, ups, skip, concurrent, ended, outcomes, recipe, run_options) -> str | None:
    """Why `node` does not start at all (None: it starts). Waits first for the upstreams it may
    not overlap (all of them when not concurrent)."""
    if node.name in set(skip or []):
        return "skipped with --skip"
    for u in ups:
        if not concurrent or overlap(node, u) is not None:
            ended[u.name].wait()
    failed = [u.name for u in ups if outcomes[u.name].state == "failed"]
    if failed:
        return f"upstream '{failed[0]}' failed"
    return _endpoint_missing(node.spec, recipe, run_options.get("endpoint_url"))


def _drive(lake, node, ups, ended, outcomes, recipe, opts, poll_s, say) -> str | None:
    """Run `node`'s jobs until its upstreams have ended and nothing is left; returns a skip
    reason when it never had anything to read, else None."""
    out = outcomes[node.name]
    while True:
        running = {u.name for u in ups if not ended[u.name].is_set()}
        missing = missing_reads(lake, node)
        # until a running upstream has added the columns tying them, a job would bind its gate
        # and its deferral without them: wait
        waiting = missing or tie_columns_missing(lake, node, running)
        if not waiting:
            out.polls += 1
            due, _ = due_work(lake, node.stage)
            if due:
                if not out.jobs:
                    say("start", node.name)
                out.add(_run_retrying(lake, node.spec, recipe, opts))
        elif not running:
            return f"nothing to do: {missing}"
        if not running or any(outcomes[u.name].state == "failed" for u in ups):
            return None
        _wait_any([ended[u] for u in running], poll_s)


def plan_pipeline(
    lake,
    recipe: str,
    *,
    only: list[str] | None = None,
    until: str | None = None,
    skip: list[str] | None = None,
    concurrent: bool = True,
) -> dict:
    """`sila pipeline run --dry-run`: per stage, what it waits for, whether it overlaps its
    upstream, and what it would do on this lake now; writes nothing and loads no model."""
    doc = load_recipe(recipe)
    nodes = _nodes(doc, only, until, skip)
    in_run = {n.name for n in nodes}
    rows = []
    for n in nodes:
        ups = [m for m in nodes if m.name in n.after]
        waits = {u.name: overlap(n, u) for u in ups}
        if not ups:
            start = "starts at once"
        elif not concurrent:
            start = "waits for upstream end (sequential)"
        elif all(w is None for w in waits.values()):
            start = "overlaps upstream"
        else:
            start = "; ".join(sorted({w for w in waits.values() if w}))
        now = ""
        if n.name in set(skip or []):
            now = "skipped with --skip"
        elif (why := missing_reads(lake, n)) and not (n.after & in_run):
            now = f"would skip: nothing to do: {why}"
        elif not why:
            due, deferred = due_work(lake, n.stage)
            now = f"{due} fragment(s) due, {deferred} deferred"
        else:
            now = "inputs come from its upstream"
        rows.append({"stage": n.name, "after": n.why, "start": start, "now": now})
    return {"recipe": recipe, "dry_run": True, "stages": rows}


def _run_retrying(lake, spec: str, recipe: str, options: dict, attempts: int = 8) -> dict:
    """One `sila run`; two jobs adding columns to one table at the same moment conflict in
    Lance (a retryable commit conflict): the loser simply runs again."""
    for i in range(attempts):
        try:
            return lake.run(spec, recipe=recipe, **options)
        except Exception as e:
            if "etryable commit conflict" not in str(e) or i == attempts - 1:
                raise
            time.sleep(0.2 * (i + 1))
    raise AssertionError("unreachable")


def _endpoint_missing(spec: str, recipe: str, url: str | None) -> str | None:
    try:
        from sila.coordinator.ops.dry_run import endpoint_skip_reason
    except ImportError:  # pragma: no cover
        return None
    return endpoint_skip_reason(spec, recipe, url)


def _wait_any(events: list[threading.Event], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.is_set() for e in events):
            return
        time.sleep(0.05)
