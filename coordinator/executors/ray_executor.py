"""The Ray executor: the driver claims fragments, loads segments, writes and commits; the
stage's preprocess / compute / postprocess run in separate Ray actor pools (ray_pools.py), each
with its own worker count and resources, the data passing between them by reference. Declared
resources are mapped onto the cluster found: a GPU step gets GPU actors where the cluster has
GPUs and runs on CPU where it has none (never an actor that cannot be scheduled). In-flight
work per pool is bounded, so a slow compute pool throttles loading instead of flooding the
object store. A setup failure fails the job before any claim; a crash is narrowed to its rows.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import replace

import pyarrow as pa
from sila.coordinator.executors.ray_pools import (
    STEPS,
    Pool,
    StepActor,
    needs_setup,
    step_resources,
)
from sila.coordinator.inputs import InputPlan
from sila.coordinator.steps import SegmentResult, crashed_rows, merge_results
from sila.coordinator.worker import FragmentWorker, WorkerOptions

from sila.errors import SilaError
from sila.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

CRASH_PROBE = 3  # rows retried alone after a crash before a segment is judged all-crashing


def init_ray(address: str | None) -> dict:
    """Join a cluster (`address`, `RAY_ADDRESS`) or start a local one sized to this machine."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "auto" and not _reachable(address):
        raise SilaError(
            f"no Ray cluster answers at {address}; start one with `ray start --head` "
            "or leave --address unset to run a local one"
        )
    kwargs = dict(
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            from sila.coordinator.executors import reaper

            reaper.start()  # a SIGKILLed driver must not leave Ray's agents running
            # "local": a new instance even when a `ray start` cluster runs on this machine
            ray.init(address="local", num_cpus=os.cpu_count(), **kwargs)
    except ConnectionError as e:
        raise SilaError(
            f"cannot join the Ray cluster at {address}: {e}; start one with `ray start --head` "
            "or leave --address unset to run a local one"
        ) from e
    return ray.cluster_resources()


def _reachable(address: str) -> bool:
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        return True
    except (OSError, ValueError):
        return False


def implemented_steps(cls: type[Stage]) -> list[str]:
    """The steps a stage implements (compute always: an identity step needs no pool)."""
    own = {
        "preprocess": cls.preprocess is not Stage.preprocess,
        "compute": True,
        "postprocess": cls.postprocess is not Stage.postprocess,
    }
    return [s for s in STEPS if own[s]]


def placed_resources(cls: type[Stage], step: str, gpus: float) -> Resources:
    """A step's declared resources on a cluster with `gpus` GPUs: a GPU request the cluster
    cannot meet becomes a CPU worker (the model then loads on "cpu"), never an actor that waits
    forever for a GPU."""
    r = step_resources(cls, step)
    return replace(r, gpus=0.0) if r.gpus and r.gpus > gpus else r


def steps_of(cls: type[Stage], gpus: float) -> list[str]:
    """Pools the stage needs: one per step it implements, or a single fused "all" pool when its
    steps ask for the same CPU-only resources on this cluster: then separate pools would only
    add object-store round trips (Ray Data fuses such operators too)."""
    steps = implemented_steps(cls)
    res = {placed_resources(cls, s, gpus) for s in steps}
    if len(steps) > 1 and len(res) == 1 and not next(iter(res)).gpus:
        return ["all"]
    return steps


def plan_pools(cls: type[Stage], cluster: dict) -> dict[str, Resources]:
    """Worker count and resources per pool, never demanding more than the cluster has."""
    cpus, gpus = float(cluster.get("CPU", 1)), float(cluster.get("GPU", 0))
    steps = steps_of(cls, gpus)
    res = {s: placed_resources(cls, "compute" if s == "all" else s, gpus) for s in steps}
    for s in steps:
        if step_resources(cls, s).gpus and not res[s].gpus:
            log.warning(
                "stage '%s' %s asks for %g GPU(s) per worker; the Ray cluster has %g: it runs "
                "on CPU", cls.name, "compute" if s == "all" else s, step_resources(cls, s).gpus, gpus,
            )  # fmt: skip
    counts: dict[str, int] = {}
    for s, r in res.items():
        if r.workers:
            counts[s] = r.workers
        elif r.gpus:
            counts[s] = max(1, int(gpus // r.gpus))
        elif s in ("compute", "all"):
            counts[s] = max(1, int((cpus - (len(steps) - 1)) // max(r.cpus, 1e-3)))
        else:
            counts[s] = 1
    demand = sum(counts[s] * res[s].cpus for s in steps)
    scale = min(1.0, cpus / demand) if demand else 1.0  # small machines: share cores fractionally
    return {
        s: Resources(
            cpus=math.floor(res[s].cpus * scale * 1000) / 1000,
            gpus=res[s].gpus,
            memory_gb=res[s].memory_gb,
            workers=counts[s],
        )
        for s in steps
    }


def step_device(r: Resources) -> str:
    """The device a pool's stage computes on: "cuda" where its actors were given a GPU."""
    return "cuda" if r.gpus else "cpu"


class RayRunner:
    """Segment runner for FragmentWorker: pre -> compute -> post through the pools, the data
    passing from pool to pool by reference; only the last step's result reaches the driver."""

    def __init__(self, pools: dict[str, Pool], stage_cls: type[Stage]) -> None:
        import ray

        self.pools = pools
        self.stage_cls = stage_cls
        self.main = pools.get("compute") or pools["all"]  # has the model: runs the isolation path
        self._ray = ray

    def start(self) -> None:  # run_ray waited for every actor's setup before any claim
        pass

    def close(self) -> None:
        pass

    def __call__(self, plan: InputPlan, part: pa.RecordBatch) -> SegmentResult:
        from sila.coordinator.steps import _conform

        n = part.num_rows
        errors = self._ray.exceptions
        try:
            ref, first = None, True
            for step in ("all", *STEPS):
                if step in self.pools:
                    args = (None, plan, part) if first else (ref, None, None)
                    ref = self.pools[step].run(*args, rows=n)
                    first = False
            return _conform(self.stage_cls, self._ray.get(ref), n)
        except (errors.RayActorError, errors.ObjectLostError) as e:
            # a crash (or a node gone with a step's result): find the row(s) that caused it
            return self._rows_alone(plan, part, str(e))
        except errors.RayTaskError:
            pass  # a step raised: the contract's per-row isolation, in one actor
        try:
            return self.main.isolate(plan, part)
        except errors.RayActorError as e:  # a row in it crashed the worker
            return self._rows_alone(plan, part, str(e))
        except errors.RayTaskError as te:
            raise te.as_instanceof_cause() from None

    def _rows_alone(self, plan: InputPlan, part: pa.RecordBatch, why: str) -> SegmentResult:
        """After a crash each row runs alone once; a row that crashes its worker again is a
        crash error (`--retry-errors` retries it). When the first rows all crash, the stage
        itself is broken: the rest are not tried (the worker's verdict then stops the job)."""
        why = why.strip().splitlines()[0][:200] if why.strip() else "actor died"
        parts: list[SegmentResult] = []
        crashed = ok = 0
        for i in range(part.num_rows):
            if crashed >= CRASH_PROBE and not ok:
                msg = (
                    f"not run: the first {crashed} rows retried alone all crashed the worker "
                    f"({why})"
                )
                parts.append(self._crash(part.num_rows - i, msg))
                break
            try:
                parts.append(self.main.isolate(plan, part.slice(i, 1)))
                ok += 1
            except self._ray.exceptions.RayActorError as e:
                crashed += 1
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else "actor died"
                parts.append(self._crash(1, f"worker crashed on this row, alone too: {first}"))
            except self._ray.exceptions.RayTaskError as te:
                raise te.as_instanceof_cause() from None
        return merge_results(self.stage_cls, parts)

    def _crash(self, n: int, msg: str) -> SegmentResult:
        return crashed_rows(self.stage_cls, n, msg)


def run_ray(
    lake,
    portable,
    cls: type[Stage],
    conf: dict,
    opts: WorkerOptions,
    workers: int,
    report,
    job,
    address: str | None = None,
) -> None:

    cluster = init_ray(address)
    plan = plan_pools(cls, cluster)
    if cls.endpoint is not None and not opts.endpoint_url:
        from sila.endpoints.serve import ensure_node_endpoints

        job.metrics["endpoints"] = ensure_node_endpoints(cls.endpoint)  # one server per node
    pools = _make_pools(lake, portable, cls, conf, opts, plan, cluster)
    try:  # every actor set up (where its step needs it) before any fragment is claimed
        refs = {s: p.start() for s, p in pools.items()}
        for s, p in pools.items():
            p.started(refs[s])
    except BaseException:
        _kill(pools)
        raise
    # Fragments in flight: enough to keep every actor fed, bounded so memory stays flat.
    actors = sum(r.workers or 1 for r in plan.values())
    concurrency = workers if workers > 1 else actors + 1
    segments = 2 * actors  # segments in flight across fragments: every actor busy, one queued each
    job.metrics.update(
        {
            "cluster": {k: v for k, v in cluster.items() if k in ("CPU", "GPU", "memory")},
            "fragments_in_flight": concurrency,
            "segments_in_flight": segments,
        }
    )
    stop = threading.Event()

    def publish() -> None:
        while not stop.wait(2.0):
            try:
                job.metrics["pools"] = {s: p.snapshot() for s, p in pools.items()}
                report({})
            except Exception:  # noqa: BLE001 - metrics must never break the job
                pass

    threading.Thread(target=publish, daemon=True).start()
    try:
        FragmentWorker(
            lake,
            cls(**conf),
            opts,
            report,
            runner=RayRunner(pools, cls),
            concurrency=concurrency,
            segment_concurrency=segments,
        ).run()
    finally:
        stop.set()
        try:
            job.metrics["pools"] = {s: p.snapshot() for s, p in pools.items()}
        except Exception:  # noqa: BLE001
            pass
        _kill(pools)


def _make_pools(lake, portable, cls: type[Stage], conf: dict, opts, plan, cluster) -> dict:
    """One actor pool per step of `plan`, each actor holding the stage (not yet started)."""
    import ray

    pools: dict[str, Pool] = {}
    cpus = float(cluster.get("CPU", 1))
    has_gpus = float(cluster.get("GPU", 0)) > 0
    for step, r in plan.items():
        # Ray pins OMP threads to num_cpus (a fraction rounds to 1): let the compute actors share
        # every core (pre/post pools are mostly idle in between), or a 2-core box computes on one.
        threads = (
            max(1, int(cpus // (r.workers or 1)))
            if step in ("compute", "all")
            else max(1, int(r.cpus))
        )
        env = {**_forwarded_env(), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        # max_concurrency=2: `stats` answers while `run` works (the pool never sends two runs)
        actor_cls = ray.remote(StepActor).options(
            num_cpus=r.cpus,
            # a pool's actors spread over the nodes; but on a cluster with GPUs a CPU pool uses
            # Ray's default policy, which keeps CPU-only actors off GPU nodes: spread, they could
            # take a GPU node's CPUs and leave its GPU unschedulable for the compute actors
            scheduling_strategy="SPREAD" if r.gpus or not has_gpus else "DEFAULT",
            num_gpus=r.gpus or 0,
            max_concurrency=2,
            runtime_env={"env_vars": env},
            memory=int(r.memory_gb * 2**30) if r.memory_gb else None,
        )
        ctx = StageContext(
            lake.uri,
            lake.storage_options,
            opts.endpoint_url,
            f"ray-{step}",
            opts.allow_random_weights,
            device=step_device(r),
        )

        def make(actor_cls=actor_cls, ctx=ctx, step=step):
            return actor_cls.remote(portable, conf, ctx, step, needs_setup(cls, step))

        pools[step] = Pool(step, r, make, cls.name)
    return pools


def _forwarded_env() -> dict[str, str]:
    """The driver's SILA_* settings (e.g. a weights path an error message told the user to set)
    reach the actors on every node; the driver-only fault injection does not."""
    return {k: v for k, v in os.environ.items() if k.startswith("SILA_") and k != "SILA_FAULT"}


def _kill(pools: dict[str, Pool]) -> None:
    import ray

    for p in pools.values():
        for a in p.actors:
            ray.kill(a)
