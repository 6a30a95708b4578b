"""A stage that declares a node-local endpoint: the platform starts the server (the OpenAI
test double here), hands its URL to the stage, and stops it; inline and on Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

import sila
from sila.endpoints.openai_client import OpenAIClient
from sila.endpoints.process import EndpointSpec
from tests.conftest import make_numbers

SERVER = str(Path(__file__).resolve().parents[1] / "openai_test_server.py")


class Describe(sila.Stage):
    name = "describe"
    table = "nums"
    inputs = ["x"]
    outputs = [pa.field("reply", pa.string()), pa.field("served_by", pa.string())]
    version = "1"
    endpoint = EndpointSpec(
        command=[sys.executable, SERVER, "--port", "{port}", "--model", "test-double"],
        name="describe-test",
        startup_timeout_s=60,
    )

    def setup(self, ctx):
        self.url = ctx.endpoint_url
        self.client = OpenAIClient(self.url) if ctx.step in ("compute", "all") else None

    def compute(self, batch):
        replies = [
            self.client.chat([{"role": "user", "content": f"describe {x}"}])
            for x in batch["x"].to_pylist()
        ]
        return {"reply": replies, "served_by": [self.url] * batch.num_rows}


def servers() -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["cmdline"]) if SERVER in " ".join(p.info["cmdline"] or [])
    ]


@pytest.mark.parametrize("executor", ["inline", "ray"])
def test_stage_gets_its_node_local_endpoint(tmp_path, executor, request):
    if executor == "ray":  # the session's two-node cluster (tests/coordinator/conftest.py)
        request.getfixturevalue("ray_cluster")
    lake = sila.Lake(tmp_path / "lake").init()
    make_numbers(lake, 2, 5)
    job = lake.run(Describe, executor=executor)
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0
    t = lake.table("nums").to_table(columns=["reply", "served_by"]).to_pylist()
    assert all(r["reply"] and r["served_by"].startswith("http://127.0.0.1:") for r in t)
    served = {r["served_by"] for r in t}
    if executor == "inline":
        assert len(served) == 1  # one server for the machine
        assert not servers()  # stopped with the job
    else:
        from sila.endpoints.serve import stop_endpoints

        urls = job["metrics"]["endpoints"]  # node id -> its server: one per node
        assert len(set(urls.values())) == len(urls) and served <= set(urls.values())
        stop_endpoints("describe-test")
    psutil.wait_procs(servers(), timeout=15)
    assert not servers()
