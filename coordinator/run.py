"""`sila run` / `Lake.run`: prepare a stage's columns, start workers, keep the job record."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import Any

from sila.coordinator.columns import prepare_columns
from sila.coordinator.discovery import split_fragments
from sila.coordinator.jobs import JobLog, JobRecord, new_job_id
from sila.coordinator.progress import ProgressView
from sila.coordinator.worker import FragmentWorker, WorkerOptions

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


def run_stage(
    lake,
    spec,
    *,
    executor: str = "auto",
    workers: int = 1,
    where: str | None = None,
    recompute: bool = False,
    retry_errors: bool = False,
    settings=None,
    recipe: str | None = None,
    progress: bool = False,
    address: str | None = None,
    **options: Any,
) -> dict:
    unknown = set(options) - _OPTION_KEYS
    if unknown:
        raise SilaError(f"unknown run option(s) {sorted(unknown)}; known: {sorted(_OPTION_KEYS)}")
    executor = choose_executor(executor, workers, address)
    cls = resolve(spec)
    recipe_doc = load_recipe(recipe)
    for k, v in recipe_doc.get(
        "storage", {}
    ).items():  # the recipe's [storage]; explicit options win
        lake.storage_options.setdefault(k, str(v))
    conf = stage_settings(recipe_doc, cls.name, settings)
    stage = cls(**conf)  # validates settings before anything is written
    ds, _reset = prepare_columns(lake, cls, recompute=recompute)
    _, pending = split_fragments(ds, cls.name)
    job = JobRecord(
        new_job_id(cls.name), cls.name, cls.table, cls.resolved_version(), executor, workers
    )
    job.progress.fragments_total = len(pending) if not retry_errors else 0
    jobs = JobLog(lake.store)
    jobs.write(job)
    opts = WorkerOptions(
        job=job.job, where=where, retry_errors=retry_errors, workers=workers, **options
    )
    view = ProgressView(
        job, enabled=progress and (job.progress.fragments_total > 0 or retry_errors)
    )
    last_write = [time.monotonic()]

    def report(event: dict) -> None:
        job.progress.add(event)
        view.update(event)
        if time.monotonic() - last_write[0] > 2.0:
            jobs.write(job)
            last_write[0] = time.monotonic()

    try:
        with view, _local_endpoint(cls, opts, executor) as url:
            opts.endpoint_url = url
            if executor == "inline" and workers <= 1:
                FragmentWorker(lake, stage, opts, report).run()
            elif executor in ("inline", "processes"):  # N fragment workers, one process each
                from sila.coordinator.procs import run_processes

                run_processes(lake, portable_spec(spec, cls), conf, opts, workers, report)
            elif executor == "ray":
                from sila.coordinator.ray_executor import run_ray

                run_ray(
                    lake,
                    portable_spec(spec, cls),
                    cls,
                    conf,
                    opts,
                    workers,
                    report,
                    job,
                    address=address,
                )
            else:
                raise SilaError(f"unknown executor '{executor}' (auto, inline, processes, ray)")
        job.state = "succeeded"
    except KeyboardInterrupt:
        job.state, job.message = "interrupted", "interrupted by the user; run again to resume"
        raise
    except Exception as e:
        job.state, job.message = "failed", f"{type(e).__name__}: {e}"
        if _reset and job.progress.fragments_done == 0:
            _rollback_columns(lake, cls)
        raise
    finally:
        job.ended_at = time.time()
        jobs.write(job)
    return job.to_dict()


def _rollback_columns(lake, cls) -> None:
    """A run that created the stage's columns and committed nothing leaves the schema as it was."""
    ds = lake.table(cls.table)
    done, _ = split_fragments(ds, cls.name)
    if done:
        return  # a concurrent job committed into them: keep
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

    from sila.coordinator.endpoint_process import EndpointProcess

    with tempfile.TemporaryDirectory(prefix="sila-endpoint-") as logs:
        proc = EndpointProcess(cls.endpoint, logs)
        proc.start()
        try:
            proc.wait_healthy(cls.endpoint.startup_timeout_s)
            yield proc.url
        finally:
            proc.stop()
