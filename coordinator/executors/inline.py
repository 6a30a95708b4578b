"""How a fragment worker computes segments in its own process (inline and process executors),
and the small futures glue the worker's loop shares with the Ray executor's threads."""

from __future__ import annotations

from concurrent.futures import Future

import pyarrow as pa
from sila.coordinator.inputs import BlobMaterializer, InputPlan, materialize
from sila.coordinator.stage_setup import set_up
from sila.coordinator.steps import SegmentResult, run_steps

from sila.lake import Lake
from sila.model import local_device
from sila.stage import Stage, StageContext


class LocalRunner:
    """Runs a segment's three steps in this process (inline and process executors)."""

    def __init__(self, lake: Lake, stage: Stage, ctx: StageContext) -> None:
        self.lake, self.stage, self.ctx = lake, stage, ctx
        ctx.device = local_device(type(stage))  # cuda for a GPU stage when CUDA is here
        self.blobs = BlobMaterializer(lake)

    def start(self) -> None:
        set_up(self.lake, self.stage, self.ctx)  # its failure fails the job, in the stage's words

    def __call__(self, plan: InputPlan, part: pa.RecordBatch) -> SegmentResult:
        try:
            return run_steps(self.stage, materialize(plan, part, self.blobs))
        finally:
            self.blobs.trim()

    def close(self) -> None:
        self.blobs.close()


def done_future(fn, *args) -> Future:
    """Run `fn` now, in this thread, and wrap the outcome as a finished Future (inline mode)."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except BaseException as e:  # noqa: BLE001 - re-raised by fut.result()
        fut.set_exception(e)
    return fut
