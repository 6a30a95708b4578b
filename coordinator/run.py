"""`sila run` / `Lake.run`: prepare a stage's columns, start workers, keep the job record."""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any

from sila.coordinator.columns import prepare_columns
from sila.coordinator.discovery import holding_values
from sila.coordinator.gating import bind_gate
from sila.coordinator.global_fit import ensure_fit
from sila.coordinator.ops.dry_run import gating_summary
from sila.coordinator.ops.jobs import JobFailureLog, JobLog, JobRecord, new_job_id
from sila.coordinator.ops.progress import ProgressView
from sila.coordinator.options import RunOptions, WorkerOptions
from sila.coordinator.redact import redact_settings
from sila.coordinator.state import (
    DEFERRED,
    PARTIAL,
    PENDING,
    STALE,
    StageRecords,
    classify,
    dependencies,
)
from sila.coordinator.worker import FragmentWorker

from sila.errors import SilaError
from sila.recipe import load_recipe, stage_settings
from sila.registry import portable_spec, resolve

log = logging.getLogger(__name__)

_OPTION_KEYS = set(WorkerOptions.__dataclass_fields__) - {
    "job",
    "worker_index",
    "workers",
    "where",
    "retry_errors",
}


def choose_executor(executor: str, workers: int, address: str | None) -> str:
    """`auto`: Ray when a cluster is named, worker processes for --workers > 1, else inline."""
    if executor != "auto":
        return executor
    if address or os.environ.get("RAY_ADDRESS"):
        return "ray"
    return "processes" if workers > 1 else "inline"


def run_stage(lake, spec, options: RunOptions | None = None, **overrides: Any) -> dict:
    """Run a stage over its due rows; returns the job record. `options` (a RunOptions) and/or
    keyword overrides of its fields (`where=`, `workers=`, ...)."""
    run = RunOptions.build(options, **overrides)
    executor = choose_executor(run.executor, run.workers, run.address)
    cls = resolve(spec)
    recipe_doc = load_recipe(run.recipe)
    for k, v in recipe_doc.get(
        "storage", {}
    ).items():  # the recipe's [storage]; explicit options win
        lake.storage_options.setdefault(k, str(v))
    conf = stage_settings(recipe_doc, cls.name, run.settings)
    stage = cls(**conf)  # validates settings before anything is written
    run.recompute = ensure_fit(lake, cls, stage, run.recompute)  # global stages: fit first
    identity = stage.work_identity()
    # the instance, not the class: its version follows its settings (a filter's rules)
    columns = prepare_columns(lake, stage, recompute=run.recompute, identity=identity)
    job = JobRecord(
        new_job_id(cls.name), cls.name, cls.table, stage.resolved_version(), executor, run.workers
    )
    job.identity, job.settings = identity, _jsonable(redact_settings(stage.config))
    job.where = run.where
    bind_gate(stage, columns.ds.schema)  # the job's row filter, as its workers will see it
    due, deferred = _due(lake, stage, identity, columns.ds, run.retry_errors, columns.reset)
    # a gated stage: what the gate saves on the fragments this job computes (deferred ones are
    # counted by the job that computes them, so a pipeline's jobs sum without double counts)
    gating = gating_summary(stage, columns.ds, due)
    if gating is not None:
        job.metrics["gating"] = gating
    due = len(due)
    job.progress.fragments_total, job.progress.fragments_deferred = due, deferred
    jobs = JobLog(lake.store)
    if due == 0 and not run.retry_errors:  # judged from metadata: no worker, no setup, no model
        job.state, job.ended_at = "succeeded", time.time()
        job.message = "nothing to do" + (f" ({deferred} fragment(s) deferred)" if deferred else "")
        jobs.write(job)
        return job.to_dict()
    failures = JobFailureLog(lake.store, job.job)
    job.log = failures.uri(lake)
    jobs.write(job)
    opts = WorkerOptions.of(
        run, job=job.job, identity=identity, reset=columns.reset, job_log=failures.key
    )
    view = ProgressView(job, enabled=run.progress and (due > 0 or run.retry_errors))
    last_write = [time.monotonic()]
    lock = threading.Lock()

    def report(event: dict) -> None:
        with lock:
            failure = event.pop("row_failure", None)
            if failure is not None:
                failures.add(failure)
                job.progress.row_failures += 1
                job.note_error(f"row {failure['row_id']!r}: {failure['error']}")
            job.progress.add(event)
            view.update(event)
            if time.monotonic() - last_write[0] > 2.0:
                failures.write()
                jobs.write(job)
                last_write[0] = time.monotonic()

    if not opts.endpoint_url and stage.endpoint_urls():
        opts.endpoint_url = stage.endpoint_urls()[0]  # servers the stage names: start none
    try:
        with view, _local_endpoint(cls, opts, executor) as url:
            opts.endpoint_url = url
            if executor == "inline" and run.workers <= 1:
                FragmentWorker(lake, stage, opts, report).run()
            elif executor in ("inline", "processes"):  # N fragment workers, one process each
                from sila.coordinator.executors.processes import run_processes

                run_processes(lake, portable_spec(spec, cls), conf, opts, run.workers, report)
            elif executor == "ray":
                from sila.coordinator.executors.ray_executor import run_ray

                run_ray(
                    lake,
                    portable_spec(spec, cls),
                    cls,
                    conf,
                    opts,
                    run.workers,
                    report,
                    job,
                    address=run.address,
                )
            else:
                raise SilaError(f"unknown executor '{executor}' (auto, inline, processes, ray)")
        job.state = "succeeded"
    except KeyboardInterrupt:
        job.state, job.message = "interrupted", "interrupted by the user; run again to resume"
        raise
    except Exception as e:
        job.state, job.message = "failed", f"{type(e).__name__}: {e}"
        if columns.created and job.progress.fragments_done == 0:
            _rollback_columns(lake, stage)  # only what this run created, and only if unused
        raise
    finally:
        job.ended_at = time.time()
        failures.write()
        jobs.write(job)
    return job.to_dict()


def _due(lake, cls, identity: str, ds, retry_errors: bool, reset: bool) -> tuple[list, int]:
    """(fragments this run has to compute, number deferred behind an upstream stage)."""
    if retry_errors:
        return [], 0
    works = classify_table(lake, cls, identity, ds)
    deferred = sum(w.status == DEFERRED for w in works)
    if reset:
        return [w.ref for w in works if w.status != DEFERRED], deferred
    return [w.ref for w in works if w.status in (PENDING, PARTIAL, STALE)], deferred


def due_work(lake, stage) -> tuple[int, int]:
    """(fragments a run of `stage` would compute now, fragments deferred), judged from metadata
    alone as `run_stage` would (its gate bound, its fit and version checked), writing nothing
    and loading nothing: a caller polling for work starts a job only when there is some."""
    from sila.coordinator.discovery import as_run_binds, column_versions
    from sila.coordinator.global_fit import FitStore

    if not lake.has_table(stage.table):
        return 0, 0
    ds = lake.table(stage.table)
    frags = len(ds.get_fragments())
    versions = column_versions(ds, stage.name)
    if versions and versions != {stage.resolved_version()}:
        return frags, 0  # a new version resets every fragment
    if stage.is_global:
        current = FitStore(lake, stage.table, stage.name).current()
        if current is None or current.signature != stage.signature_on(lake):
            return frags, 0  # a fit is due
        stage = copy.copy(stage)
        stage.use_fit(current)  # as ensure_fit binds it (id and lineage): the work identity
    bound = as_run_binds(ds, stage)
    works = classify_table(lake, bound, bound.work_identity(), ds)
    deferred = sum(w.status == DEFERRED for w in works)
    return sum(w.status in (PENDING, PARTIAL, STALE) for w in works), deferred


def classify_table(lake, cls, identity: str | None, ds=None):
    """Every fragment's work for a stage (`cls`: the job's stage instance, which carries its
    row filter, or a class outside a job)."""
    ds = ds if ds is not None else lake.table(cls.table)
    deps = dependencies(ds.schema, cls)
    upstream = {u: StageRecords(lake.store, cls.table, u).load() for u in deps.all}
    records = StageRecords(lake.store, cls.table, cls.name).load()
    return classify(ds, cls, identity, records, upstream, deps)


def _jsonable(conf: dict) -> dict:
    """Settings as the job record keeps them: JSON values stay values (lists and tables too, so
    a stage rebuilt from a record gets what the run had); anything else becomes its text."""
    out = {}
    for k, v in conf.items():
        try:
            json.dumps(v)
            out[k] = v
        except (TypeError, ValueError):
            out[k] = str(v)
    return out


def _rollback_columns(lake, cls) -> None:
    """A run that created the stage's columns and committed nothing leaves the schema as it was."""
    ds = lake.table(cls.table)
    if holding_values(ds, cls):
        return  # a concurrent job committed into them (a partial `--where` run too): keep
    names = [f.name for f in cls.output_fields() if f.name in ds.schema.names]
    try:
        ds.drop_columns(names)
    except (OSError, ValueError) as e:
        log.warning("could not remove the columns of failed stage %s: %s", cls.name, e)


@contextmanager
def _local_endpoint(cls, opts: WorkerOptions, executor: str):
    """Off Ray, a stage's endpoint runs on this machine for the job's duration."""
    if cls.endpoint is None or opts.endpoint_url or executor == "ray":
        yield opts.endpoint_url
        return
    import tempfile

    from sila.endpoints.process import EndpointProcess

    with tempfile.TemporaryDirectory(prefix="sila-endpoint-") as logs:
        proc = EndpointProcess(cls.endpoint, logs)
        proc.start()
        try:
            proc.wait_healthy(cls.endpoint.startup_timeout_s)
            yield proc.url
        finally:
            proc.stop()
