"""Ray actor pools for the Ray executor: one pool per step, each actor holding one stage.

A step's result stays in Ray's object store: an actor returns (small status, payload) and the
driver keeps only the payload's reference, which it hands to the next pool. `setup()` runs only
in the pools whose step needs it (`needs_setup`), so preprocess actors never load the model.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import pyarrow as pa
from sila.coordinator.inputs import InputPlan
from sila.coordinator.stage_setup import set_up
from sila.coordinator.steps import SegmentResult

from sila.errors import ContractError, SilaError, StageFailed
from sila.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

STEPS = ("preprocess", "compute", "postprocess")


def setup_steps(cls: type[Stage]) -> tuple[str, ...]:
    """Steps whose workers run `setup()`: a stage's `setup_steps`, by default compute only."""
    steps = tuple(cls.setup_steps)
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ContractError(
            f"stage '{cls.name}': setup_steps names {sorted(unknown)}; use some of {list(STEPS)}"
        )
    return steps


def needs_setup(cls: type[Stage], step: str) -> bool:
    """Whether the actors of `step` ("all" = the fused pool) run the stage's `setup()`."""
    return step == "all" or step in setup_steps(cls)


def step_resources(cls: type[Stage], step: str) -> Resources:
    """What a stage declares for one step (the fused "all" pool: its compute resources)."""
    return {
        "preprocess": cls.preprocess_resources,
        "compute": cls.compute_resources,
        "all": cls.compute_resources,
        "postprocess": cls.postprocess_resources,
    }[step]


def run_step(stage: Stage, step: str, payload):
    """One declared step of `stage` on `payload` ("all": the three in order)."""
    if step == "all":
        return stage.postprocess(stage.compute(stage.preprocess(payload)))
    return {
        "preprocess": stage.preprocess,
        "compute": stage.compute,
        "postprocess": stage.postprocess,
    }[step](payload)


class StepActor:
    """Holds one stage instance; runs one of its steps. Made a Ray actor by the executor."""

    def __init__(self, portable, conf: dict, ctx: StageContext, step: str, setup: bool) -> None:
        from sila.coordinator.inputs import BlobMaterializer

        from sila.lake import Lake
        from sila.registry import from_portable

        self.stage = from_portable(portable)(**conf)
        self.step, self.ctx, self.wants_setup = step, ctx, setup
        ctx.step = step
        self.ready = False
        self.blobs = BlobMaterializer(Lake(ctx.lake_uri, storage_options=ctx.storage_options))
        self.busy = 0.0
        self.rows = 0

    def setup(self) -> str:
        """Run the stage's setup if this step needs it; the node id tells where we run."""
        import ray

        if self.wants_setup:
            self._setup()
        return ray.get_runtime_context().get_node_id()

    def _setup(self) -> None:
        if self.ready:
            return
        if self.stage.endpoint is not None and self.ctx.endpoint_url is None:
            from sila.endpoints.serve import endpoint_url_for_current_node

            self.ctx.endpoint_url = endpoint_url_for_current_node(self.stage.endpoint)
        set_up(self.blobs.lake, self.stage, self.ctx)  # context filled, facts stamped after
        self.ready = True

    def run(self, payload, plan: InputPlan | None, part: pa.RecordBatch | None):
        """One step on one segment -> (status, result). The driver waits on the small status
        and passes the result on by reference; the first pool materialises the inputs."""
        from sila.coordinator.inputs import materialize

        t0 = time.perf_counter()
        try:
            if plan is not None:
                payload = materialize(plan, part, self.blobs)
            return True, run_step(self.stage, self.step, payload)
        finally:
            self.blobs.trim()
            self.busy += time.perf_counter() - t0

    def isolate(self, plan: InputPlan, part: pa.RecordBatch) -> SegmentResult:
        """All three steps here, rows isolated on failure (the contract's error path)."""
        from sila.coordinator.inputs import materialize
        from sila.coordinator.steps import run_steps

        self._setup()  # this actor may hold a step that did not need it
        t0 = time.perf_counter()
        try:
            return run_steps(self.stage, materialize(plan, part, self.blobs))
        finally:
            self.blobs.trim()
            self.busy += time.perf_counter() - t0

    def stats(self) -> dict:
        import ray

        return {
            "busy_s": self.busy,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }


@dataclass
class PoolMetrics:
    rows: int = 0
    calls: int = 0
    waiting: int = 0  # segments queued for this pool (backpressure shows here)
    retries: int = 0  # actors replaced after they died
    started: float = field(default_factory=time.monotonic)
    rows_by_node: dict[str, int] = field(default_factory=dict)


class Pool:
    """A fixed set of actors for one step; at most one call per actor at a time."""

    def __init__(self, step: str, resources: Resources, make, stage_name: str) -> None:
        import ray

        self.step, self.resources, self._make, self.stage_name = step, resources, make, stage_name
        self._ray = ray
        self.actors = [make() for _ in range(resources.workers or 1)]
        self.idle = list(self.actors)
        self.cond = threading.Condition()
        self.metrics = PoolMetrics()
        self.nodes: dict[int, str] = {}  # id(actor) -> node id

    def start(self) -> list:
        """Refs of every actor's setup; `check_setup` turns their failure into the job's."""
        return [a.setup.remote() for a in self.actors]

    def started(self, refs: list) -> None:
        for actor, node in zip(self.actors, self.check_setup(refs), strict=True):
            self.nodes[id(actor)] = node

    def check_setup(self, refs: list) -> list[str]:
        try:
            return self._ray.get(refs)
        except self._ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, SilaError):  # setup_stage's message, the stage's own words
                raise type(cause)(str(cause)) from None
            raise StageFailed(f"stage '{self.stage_name}' failed to set up: {cause!r}") from None
        except self._ray.exceptions.RayActorError as e:
            raise StageFailed(
                f"stage '{self.stage_name}': its {self.step} workers could not start: "
                f"{str(e).strip().splitlines()[-1][:500]}. Nothing was computed or committed."
            ) from None

    def run(self, payload, plan, part, rows: int):
        """`run` on one idle actor; returns the result's reference once the step finished.
        Raises RayActorError when the actor died (it is replaced), RayTaskError when the step
        raised."""
        return self._call("run", (payload, plan, part), rows, two=True)

    def isolate(self, plan, part) -> SegmentResult:
        return self._call("isolate", (plan, part), 0, two=False)

    def _call(self, method: str, args: tuple, rows: int, two: bool):
        with self.cond:
            self.metrics.waiting += 1
            while not self.idle:
                self.cond.wait()
            actor = self.idle.pop()
            self.metrics.waiting -= 1
        try:
            fn = getattr(actor, method)
            if two:
                status, out = fn.options(num_returns=2).remote(*args)
                self._ray.get(status)  # waits for the step; the payload stays where it is
            else:
                out = self._ray.get(fn.remote(*args))
            self.metrics.rows += rows
            self.metrics.calls += 1
            node = self.nodes.get(id(actor), "?")
            self.metrics.rows_by_node[node] = self.metrics.rows_by_node.get(node, 0) + rows
            return out
        except self._ray.exceptions.RayActorError as e:
            log.warning("%s actor died (%s); replacing it", self.step, str(e).splitlines()[0])
            self.metrics.retries += 1
            actor = self._replace(actor)
            raise
        finally:
            with self.cond:
                self.idle.append(actor)
                self.cond.notify()

    def _replace(self, dead):
        new = self._make()
        self.nodes[id(new)] = self.check_setup([new.setup.remote()])[0]
        with self.cond:
            self.actors = [new if a is dead else a for a in self.actors]
        return new

    def snapshot(self) -> dict:
        stats = self._ray.get([a.stats.remote() for a in self.actors], timeout=30)
        busy = sum(s["busy_s"] for s in stats)
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
            "rows_by_node": dict(self.metrics.rows_by_node),
        }
