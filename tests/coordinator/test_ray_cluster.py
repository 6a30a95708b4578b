"""A two-node Ray cluster (two raylets on this machine, `ray.cluster_utils.Cluster`): one
stage's compute actors spread over both nodes and both compute rows."""

from __future__ import annotations

import pytest

import sila
from tests.conftest import make_numbers

pytestmark = pytest.mark.slow

STAGE = """
import time
import pyarrow as pa
from sila import Stage, Resources

class Spread(Stage):
    name = "spread"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("node_x", pa.float64())]
    segment_rows = 20
    compute_resources = Resources(cpus=1)
    def compute(self, batch):
        time.sleep(0.2)  # long enough that one actor cannot take every segment
        return {"node_x": [x - 1 for x in batch["x"].to_pylist()]}
"""


def test_both_nodes_compute(tmp_path, ray_cluster):
    import ray

    (tmp_path / "spread.py").write_text(STAGE)
    lake = sila.Lake(tmp_path / "lake").init()
    make_numbers(lake, 4, 40)
    job = lake.run(f"{tmp_path / 'spread.py'}:Spread", executor="ray")
    assert job["state"] == "succeeded" and lake.table("nums").count_rows("node_x = x - 1") == 160
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2 and job["metrics"]["cluster"]["CPU"] == 2
    pool = job["metrics"]["pools"]["compute"]
    assert pool["actors"] == 2
    by_node = pool["rows_by_node"]
    assert set(by_node) == nodes and all(rows > 0 for rows in by_node.values()), by_node
    assert sum(by_node.values()) == 160
