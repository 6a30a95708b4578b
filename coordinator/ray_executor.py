"""The Ray executor: the driver claims fragments, loads segments, writes and commits; the
stage's preprocess / compute / postprocess run in separate Ray actor pools, each with its own
worker count and resources. In-flight work per pool is bounded, so a slow compute pool
throttles loading instead of flooding the object store.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field

import pyarrow as pa
from sila.coordinator.inputs import InputPlan
from sila.coordinator.steps import SegmentResult, failed_rows
from sila.coordinator.worker import FragmentWorker, WorkerOptions

from sila.errors import SilaError
from sila.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

STEPS = ("preprocess", "compute", "postprocess")
MAX_ATTEMPTS = 3


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
            from sila.coordinator import reaper

            reaper.start()  # a SIGKILLed driver must not leave Ray's agents running
            ray.init(num_cpus=os.cpu_count(), **kwargs)
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


def steps_of(cls: type[Stage]) -> list[str]:
    """Pools the stage needs: one per step it implements (an identity step needs no pool), or a
    single fused "all" pool when its steps ask for the same CPU-only resources: then separate
    pools would only add object-store round trips (Ray Data fuses such operators too)."""
    steps = [s for s in STEPS if s == "compute" or getattr(cls, s) is not getattr(Stage, s)]
    res = {getattr(cls, f"{s}_resources") for s in steps}
    if len(steps) > 1 and len(res) == 1 and not next(iter(res)).gpus:
        return ["all"]
    return steps


def plan_pools(cls: type[Stage], cluster: dict) -> dict[str, Resources]:
    """Worker count and resources per pool, never demanding more than the cluster has."""
    cpus, gpus = float(cluster.get("CPU", 1)), float(cluster.get("GPU", 0))
    steps = steps_of(cls)
    res = {s: getattr(cls, f"{'compute' if s == 'all' else s}_resources") for s in steps}
    counts: dict[str, int] = {}
    for s, r in res.items():
        if r.workers:
            counts[s] = r.workers
        elif r.gpus:
            counts[s] = max(1, int(gpus // r.gpus)) if gpus else 1
        elif s in ("compute", "all"):
            counts[s] = max(1, int((cpus - (len(steps) - 1)) // max(r.cpus, 1e-3)))
        else:
            counts[s] = 1
    demand = sum(counts[s] * res[s].cpus for s in steps)
    scale = min(1.0, cpus / demand) if demand else 1.0  # small machines: share cores fractionally
    out = {}
    for s in steps:
        r = res[s]
        if r.gpus and r.gpus > gpus:
            raise SilaError(
                f"stage '{cls.name}' {s} needs {r.gpus} GPU(s) per worker; the Ray cluster has {gpus:g}"
            )
        out[s] = Resources(
            cpus=math.floor(r.cpus * scale * 1000) / 1000,
            gpus=r.gpus,
            memory_gb=r.memory_gb,
            workers=counts[s],
        )
    return out


class StepActor:
    """Holds one stage instance; runs one of its steps. Made a Ray actor by `make_actor`."""

    def __init__(self, portable, conf: dict, ctx: StageContext, step: str) -> None:
        from sila.coordinator.inputs import BlobMaterializer

        from sila.lake import Lake
        from sila.registry import from_portable

        self.stage = from_portable(portable)(**conf)
        self.step = step
        ctx.step = step
        if self.stage.endpoint is not None and ctx.endpoint_url is None:
            from sila.coordinator.endpoints import endpoint_url_for_current_node

            ctx.endpoint_url = endpoint_url_for_current_node(
                self.stage.endpoint
            )  # this node's server
        self.stage.setup(ctx)
        self.blobs = BlobMaterializer(Lake(ctx.lake_uri, storage_options=ctx.storage_options))
        self.busy = 0.0

    def run(self, payload, plan: InputPlan | None, part: pa.RecordBatch | None):
        """One step on one segment; the first pool materialises the inputs on its own node."""
        from sila.coordinator.inputs import materialize

        t0 = time.perf_counter()
        try:
            if plan is not None:
                payload = materialize(plan, part, self.blobs)
            if self.step == "all":
                return self.stage.postprocess(self.stage.compute(self.stage.preprocess(payload)))
            return getattr(self.stage, self.step)(payload)
        finally:
            self.blobs.trim()
            self.busy += time.perf_counter() - t0

    def isolate(self, plan: InputPlan, part: pa.RecordBatch) -> SegmentResult:
        """All three steps here, rows isolated on failure (the contract's error path)."""
        from sila.coordinator.inputs import materialize
        from sila.coordinator.steps import run_steps

        t0 = time.perf_counter()
        try:
            return run_steps(self.stage, materialize(plan, part, self.blobs))
        finally:
            self.blobs.trim()
            self.busy += time.perf_counter() - t0

    def stats(self) -> dict:
        return {"busy_s": self.busy, "pid": os.getpid()}


@dataclass
class PoolMetrics:
    rows: int = 0
    calls: int = 0
    waiting: int = 0  # segments queued for this pool (backpressure shows here)
    retries: int = 0
    started: float = field(default_factory=time.monotonic)


class Pool:
    """A fixed set of actors for one step; at most `capacity` segments in flight."""

    def __init__(self, step: str, resources: Resources, make) -> None:
        import ray

        self.step, self.resources, self._make = step, resources, make
        self.actors = [make() for _ in range(resources.workers or 1)]
        self.idle = list(self.actors)
        self.cond = threading.Condition()
        self.metrics = PoolMetrics()
        self._ray = ray

    def call(self, method: str, *args, rows: int = 0):
        with self.cond:
            self.metrics.waiting += 1
            while not self.idle:
                self.cond.wait()
            actor = self.idle.pop()
            self.metrics.waiting -= 1
        try:
            for attempt in range(MAX_ATTEMPTS):
                try:
                    out = self._ray.get(getattr(actor, method).remote(*args))
                    self.metrics.rows += rows
                    self.metrics.calls += 1
                    return out
                except self._ray.exceptions.RayActorError as e:
                    log.warning("%s actor died (%s); replacing it and retrying", self.step, e)
                    self.metrics.retries += 1
                    actor = self._replace(actor)
                    if attempt == MAX_ATTEMPTS - 1:
                        raise
        finally:
            with self.cond:
                self.idle.append(actor)
                self.cond.notify()

    def _replace(self, dead):
        new = self._make()
        with self.cond:
            self.actors = [new if a is dead else a for a in self.actors]
        return new

    def snapshot(self) -> dict:
        busy = sum(
            self._ray.get([a.stats.remote() for a in self.actors], timeout=30)[i]["busy_s"]
            for i in range(len(self.actors))
        )
        wall = max(time.monotonic() - self.metrics.started, 1e-9)
        return {
            "actors": len(self.actors),
            "cpus_each": self.resources.cpus,
            "gpus_each": self.resources.gpus,
            "rows": self.metrics.rows,
            "rows_per_s": round(self.metrics.rows / wall, 2),
            "queue_depth": self.metrics.waiting,
            "busy_fraction": round(busy / (wall * len(self.actors)), 3),
            "actor_restarts": self.metrics.retries,
        }


class RayRunner:
    """Segment runner for FragmentWorker: pre -> compute -> post through the pools."""

    def __init__(self, pools: dict[str, Pool], stage_cls: type[Stage]) -> None:
        self.pools = pools
        self.stage_cls = stage_cls
        self.main = pools.get("compute") or pools["all"]  # has the model: runs the isolation path

    def start(self) -> None:  # the actors ran setup() when they were created
        pass

    def close(self) -> None:
        pass

    def __call__(self, plan: InputPlan, part: pa.RecordBatch) -> SegmentResult:
        from sila.coordinator.steps import _conform

        n = part.num_rows
        try:
            payload, first = None, True
            for step in ("all", *STEPS):
                if step in self.pools:
                    args = (None, plan, part) if first else (payload, None, None)
                    payload = self.pools[step].call("run", *args, rows=n)
                    first = False
            return _conform(self.stage_cls, payload, n)
        except Exception as e:  # noqa: BLE001 - contract errors re-raise from isolate
            if isinstance(e, self.main._ray.exceptions.RayActorError):
                # the segment kept killing its workers: row errors instead of a stalled job
                why = f"worker died {MAX_ATTEMPTS} times: {str(e)[:200]}"
                return failed_rows(self.stage_cls, n, why, unexpected=False)
            from sila.errors import ContractError

            if isinstance(e, ContractError):
                raise
            try:
                return self.main.call("isolate", plan, part, rows=0)
            except self.main._ray.exceptions.RayTaskError as te:
                raise te.as_instanceof_cause() from None


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
    import ray

    cluster = init_ray(address)
    plan = plan_pools(cls, cluster)
    if cls.endpoint is not None and not opts.endpoint_url:
        from sila.coordinator.endpoints import ensure_node_endpoints

        job.metrics["endpoints"] = ensure_node_endpoints(cls.endpoint)  # one server per node
    pools: dict[str, Pool] = {}
    cpus = float(cluster.get("CPU", 1))
    for step, r in plan.items():
        # Ray pins OMP threads to num_cpus (a fraction rounds to 1): let the compute actors share
        # every core (pre/post pools are mostly idle in between), or a 2-core box computes on one.
        threads = (
            max(1, int(cpus // (r.workers or 1)))
            if step in ("compute", "all")
            else max(1, int(r.cpus))
        )
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        # max_concurrency=2: `stats` answers while `run` works (the pool never sends two runs)
        actor_cls = ray.remote(StepActor).options(
            num_cpus=r.cpus,
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
        )

        def make(actor_cls=actor_cls, ctx=ctx, step=step):
            return actor_cls.remote(portable, conf, ctx, step)

        pools[step] = Pool(step, r, make)
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
        for p in pools.values():
            for a in p.actors:
                ray.kill(a)
