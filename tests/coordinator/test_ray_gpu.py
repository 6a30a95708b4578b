"""GPU placement on Ray: a fake-GPU cluster (`ray.cluster_utils.Cluster`, a CPU-only head and a
node with one fake GPU) puts a GPU stage's compute actors on the GPU node with a GPU assigned
and its decoding in CPU pools; a cluster with no GPU runs `embed` to completion on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from sila.coordinator.executors.ray_executor import plan_pools
from sila.stages.embed import Embed
from sila.stages.split import Split
from sila.stages.tag import Tag

import sila
from tests.clip_lake import clips_table
from tests.conftest import make_numbers

pytestmark = pytest.mark.slow

TINY = str(Path(__file__).parents[1] / "stages" / "data" / "sila-tiny-clip.json")

STAGE = """
import os
import pyarrow as pa
import ray
from sila import Stage, Resources

def where():
    return ray.get_runtime_context().get_node_id(), ",".join(str(g) for g in ray.get_gpu_ids())

class GpuProbe(Stage):
    '''A model stage in miniature: decode on CPU (preprocess), infer on a GPU (compute).'''
    name = "probe"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("pre_node", pa.string()), pa.field("pre_gpus", pa.string()),
               pa.field("node", pa.string()), pa.field("gpus", pa.string()),
               pa.field("device", pa.string())]
    segment_rows = 25
    compute_resources = Resources(cpus=1, gpus=1)

    def setup(self, ctx):
        self.device = ctx.device  # what the platform chose for this step

    def preprocess(self, batch):
        return batch.num_rows, where()

    def compute(self, prepared):
        n, (pre_node, pre_gpus) = prepared
        node, gpus = where()
        return {"pre_node": [pre_node] * n, "pre_gpus": [pre_gpus] * n, "node": [node] * n,
                "gpus": [gpus] * n, "device": [self.device] * n}
"""


@pytest.fixture
def gpu_cluster():
    """A CPU-only head node and a second node with one (fake) GPU, for one test."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    gpu_node = c.add_node(num_cpus=1, num_gpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield gpu_node.node_id
    finally:
        ray.shutdown()
        c.shutdown()


def test_model_stages_ask_for_a_gpu_and_decode_in_cpu_pools():
    plan = plan_pools(Embed, {"CPU": 8.0, "GPU": 2.0})
    assert plan["compute"].gpus == 1 and plan["compute"].workers == 2
    assert plan["preprocess"].gpus == 0 and plan["postprocess"].gpus == 0  # decoding on CPU
    assert plan_pools(Split, {"CPU": 4.0, "GPU": 1.0})["compute"].gpus == 1
    assert plan_pools(Tag, {"CPU": 4.0, "GPU": 1.0})["compute"].gpus == 1
    # no GPU in the cluster: the same stage on CPU workers, fused into one pool
    cpu = plan_pools(Embed, {"CPU": 2.0})
    assert list(cpu) == ["all"] and cpu["all"].gpus == 0


def test_compute_actors_land_on_the_gpu_node_with_a_gpu(tmp_path, gpu_cluster):
    (tmp_path / "probe.py").write_text(STAGE)
    lake = sila.Lake(tmp_path / "lake").init()
    make_numbers(lake, 2, 50)
    job = lake.run(f"{tmp_path / 'probe.py'}:GpuProbe", executor="ray")
    assert job["state"] == "succeeded" and job["metrics"]["cluster"]["GPU"] == 1
    pools = job["metrics"]["pools"]
    assert pools["compute"]["gpus_each"] == 1 and pools["preprocess"]["gpus_each"] == 0
    rows = lake.table("nums").to_table(columns=["pre_gpus", "node", "gpus", "device"]).to_pylist()
    assert len(rows) == 100
    for r in rows:
        assert r["node"] == gpu_cluster and r["gpus"] == "0" and r["device"] == "cuda"
        assert r["pre_gpus"] == ""  # the decoding actors hold no GPU


def test_without_a_gpu_embed_computes_on_cpu(lake, clip_media, ray_cluster, monkeypatch):
    monkeypatch.delenv("SILA_CLIP_WEIGHTS", raising=False)
    clips_table(lake, clip_media[:4])
    conf = {"model": TINY, "pretrained": "", "frames": 2}
    job = lake.run("embed", settings=conf, allow_random_weights=True, executor="ray")
    assert job["state"] == "succeeded" and "GPU" not in job["metrics"]["cluster"]
    assert {p["gpus_each"] for p in job["metrics"]["pools"].values()} == {0}
    t = lake.table("clips").to_table(columns=["id", "embedding", "embed_error"]).to_pylist()
    good = [r for r in t if r["id"] != "bad/0-1"]
    assert len(good) == 4 and all(r["embedding"] and r["embed_error"] is None for r in good)
    field = lake.table("clips").schema.field("embedding")
    assert field.metadata[b"sila.random_weights"] == b"true"
