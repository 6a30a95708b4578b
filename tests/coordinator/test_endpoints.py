"""Node-local endpoints against real processes, real HTTP and a real local Ray cluster.

The model server is `tests/openai_test_server.py`, a test double that speaks the OpenAI API.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import jsonschema
import psutil
import pytest

from sila.endpoints.serve import (
    EndpointActor,
    EndpointError,
    EndpointProcess,
    EndpointSpec,
    OpenAIClient,
    endpoint_url_for_current_node,
    ensure_node_endpoints,
    image_part,
    list_endpoints,
    stop_endpoints,
)

SERVER = Path(__file__).resolve().parents[1] / "openai_test_server.py"
MODEL = "test-model"

CAPTION_SCHEMA = {
    "type": "object",
    "properties": {
        "caption": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "motion": {"enum": ["static", "slow", "fast"]},
        "score": {"type": "number", "minimum": 1, "maximum": 5},
        "objects": {"type": "array", "items": {"$ref": "#/$defs/obj"}},
        "nsfw": {"type": "boolean"},
    },
    "required": ["caption", "tags", "motion", "score", "objects", "nsfw"],
    "additionalProperties": False,
    "$defs": {
        "obj": {
            "type": "object",
            "properties": {"label": {"type": "string"}, "count": {"type": "integer"}},
            "required": ["label", "count"],
        }
    },
}


def server_spec(name: str = "t", *extra: str, **kw) -> EndpointSpec:
    cmd = [sys.executable, str(SERVER), "--port", "{port}", "--model", MODEL, *extra]
    return EndpointSpec(command=cmd, name=name, startup_timeout_s=kw.pop("timeout", 30), **kw)


def wait_for(cond, timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def running(pid: int | None) -> bool:
    """Alive and not a zombie (an orphan's zombie waits on an init that may never reap it)."""
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def family(pid: int) -> list[int]:
    return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]


@pytest.fixture
def proc(tmp_path):
    p = EndpointProcess(server_spec(), tmp_path / "logs")
    p.start()
    p.wait_healthy()
    yield p
    p.stop()


def test_busy_port_is_refused(proc, tmp_path):
    other = EndpointProcess(server_spec("other", port=proc.port), tmp_path)
    with pytest.raises(EndpointError, match=f"port {proc.port} is already in use"):
        other.start()


def test_process_serves_openai_chat(proc):
    assert proc.url == f"http://127.0.0.1:{proc.port}/v1"
    assert proc.alive() and proc.health()
    client = OpenAIClient(proc.url, timeout_s=10)
    assert client.models() == [MODEL]
    content = [{"type": "text", "text": "describe"}, image_part(b"\xff\xd8fakejpeg")]
    reply = client.chat([{"role": "user", "content": content}], model=MODEL)
    assert "test-double" in reply and "1 image(s)" in reply and "8 text chars" in reply
    # the raw response has the real chat.completion shape
    raw = client.complete([{"role": "user", "content": "hi"}], seed=1)
    assert raw["object"] == "chat.completion" and raw["model"] == MODEL
    assert raw["choices"][0]["message"]["role"] == "assistant"
    assert raw["choices"][0]["finish_reason"] == "stop"
    assert (
        raw["usage"]["total_tokens"]
        == raw["usage"]["prompt_tokens"] + raw["usage"]["completion_tokens"]
    )
    fmt = {"type": "json_schema", "json_schema": {"name": "caption", "schema": CAPTION_SCHEMA}}
    out = json.loads(
        client.chat([{"role": "user", "content": "x"}], response_format=fmt, max_tokens=64)
    )
    jsonschema.validate(out, CAPTION_SCHEMA)
    assert out["caption"] == "test-double" and out["score"] == 1


def test_client_errors_and_retries(tmp_path):
    p = EndpointProcess(server_spec("flaky", "--fail-first", "2"), tmp_path)
    p.start()
    try:
        p.wait_healthy()
        # two 503s, then an answer: retried with backoff
        client = OpenAIClient(p.url, retries=3, backoff_s=0.01)
        assert "test-double" in client.chat([{"role": "user", "content": "hi"}], model=MODEL)
        with pytest.raises(EndpointError, match="does not exist"):  # 4xx: no retry
            client.chat([{"role": "user", "content": "hi"}], model="other")
    finally:
        p.stop()
    with pytest.raises(EndpointError, match="failed after 2 attempts"):
        OpenAIClient(p.url, retries=1, backoff_s=0.01, timeout_s=2).models()


def test_never_healthy_names_the_log(tmp_path):
    quiet = EndpointSpec(
        command=[
            sys.executable,
            "-c",
            "print('loading weights...', flush=True); import time; time.sleep(60)",
        ],
        name="slow",
        startup_timeout_s=1.5,
    )
    p = EndpointProcess(quiet, tmp_path)
    p.start()
    with pytest.raises(EndpointError) as e:
        p.wait_healthy()
    p.stop()
    msg = str(e.value)
    assert "not healthy" in msg and str(p.log_path) in msg and "loading weights..." in msg

    broken = EndpointSpec(
        command=[sys.executable, "-c", "import sys; print('CUDA out of memory'); sys.exit(7)"],
        name="broken",
    )
    p = EndpointProcess(broken, tmp_path)
    p.start()
    with pytest.raises(EndpointError, match=r"exited with code 7[\s\S]*CUDA out of memory"):
        p.wait_healthy()
    with pytest.raises(EndpointError, match="cannot run"):
        EndpointProcess(EndpointSpec(command=["/no/such/server"], name="x"), tmp_path).start()


def test_stop_leaves_no_process_behind(tmp_path):
    # a server with a child of its own that ignores SIGTERM, like a stuck model worker
    cmd = [
        "bash",
        "-c",
        f"(trap '' TERM; sleep 300) & exec {sys.executable} {SERVER} --port {{port}}",
    ]
    p = EndpointProcess(EndpointSpec(command=cmd, name="kids"), tmp_path, stop_grace_s=1.0)
    p.start()
    p.wait_healthy(timeout_s=30)
    pids = family(p.pid)
    assert len(pids) >= 2 and running(p.guard_pid)
    guard = p.guard_pid
    t0 = time.monotonic()
    p.stop()
    assert time.monotonic() - t0 < 5
    wait_for(lambda: not any(running(x) for x in [*pids, guard]), 3, "processes to go")
    assert not p.alive() and p.pid is None


def test_guard_stops_server_when_owner_is_killed(tmp_path):
    # the owner (think: a SIGKILLed Ray actor) starts a server and dies without cleaning up
    code = (
        "import sys, time\n"
        "from sila.endpoints.process import EndpointProcess, EndpointSpec\n"
        f"p = EndpointProcess(EndpointSpec(command={server_spec().command!r}, name='orphan'), {str(tmp_path)!r})\n"
        "p.start(); p.wait_healthy(); print(p.pid, flush=True); time.sleep(300)\n"
    )
    import subprocess

    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    server_pid = int(owner.stdout.readline())
    assert running(server_pid)
    owner.kill()
    owner.wait()
    wait_for(lambda: not running(server_pid), 15, "the guard to stop the orphaned server")


def test_actor_monitor_restarts_a_dead_server(tmp_path):
    actor = EndpointActor(
        server_spec("mon", "--crash-after", "2"), str(tmp_path), monitor_interval_s=0.2
    )
    try:
        url = actor.start()
        assert actor.start() == url  # idempotent
        client = OpenAIClient(url, retries=0)
        client.models()
        client.chat([{"role": "user", "content": "hi"}], model=MODEL)  # 2nd request: server exits
        wait_for(lambda: actor.restarts() >= 1 and actor.health(), 20, "a restart")
        assert actor.url() == url  # same port: workers keep their URL
        first = actor.process.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: actor.restarts() >= 2 and actor.health(), 20, "a second restart")
        assert actor.process.pid != first
        assert OpenAIClient(url).models() == [MODEL]
        assert actor.process.starts == 3 and "start #3" in actor.process.log_path.read_text()
    finally:
        pid = actor.process.pid
        actor.stop()
    assert not running(pid) and not actor.health()


# -- a real Ray cluster of two nodes on this machine ---------------------------------------


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def test_one_endpoint_per_node(cluster, tmp_path):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    spec = server_spec("ray")
    urls = ensure_node_endpoints(spec)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    assert sorted(urls) == sorted(nodes) and len(set(urls.values())) == 2
    assert ensure_node_endpoints(spec) == urls  # named actors are reused, not duplicated

    @ray.remote(num_cpus=1)
    def ask(spec: EndpointSpec) -> tuple[str, str, list[str]]:
        url = endpoint_url_for_current_node(spec)
        return ray.get_runtime_context().get_node_id(), url, OpenAIClient(url).models()

    got = ray.get(
        [
            ask.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(
                spec
            )
            for n in nodes
        ]
    )
    for node_id, url, models in got:
        assert url == urls[node_id] and models == [MODEL]

    with pytest.raises(EndpointError, match="another spec"):
        ensure_node_endpoints(server_spec("ray", "--fail-first", "1"))

    listed = {e["actor"]: e for e in list_endpoints("ray")}
    assert sorted(e["url"] for e in listed.values()) == sorted(urls.values())

    # killing the actor (as Ray does when a job ends) must not orphan its server
    actor = ray.get_actor(spec.actor_name(nodes[1]), namespace="sila")
    info = ray.get(actor.info.remote())
    assert info["node_id"] == nodes[1] and info["healthy"] and running(info["pid"])
    ray.kill(actor)
    wait_for(lambda: not running(info["pid"]), 15, "the server of a killed actor to stop")

    left = ray.get(ray.get_actor(spec.actor_name(nodes[0]), namespace="sila").info.remote())
    assert stop_endpoints("ray") == [spec.actor_name(nodes[0])]
    assert not running(left["pid"]) and list_endpoints("ray") == []


def test_cli_up_ls_down(cluster):
    from sila.cli.endpoint import endpoint_app
    from typer.testing import CliRunner

    runner = CliRunner()
    addr = ["--address", cluster.address, "--json"]
    cmd = f"{sys.executable} {SERVER} --port {{port}} --model {MODEL}"
    r = runner.invoke(
        endpoint_app, ["up", "-n", "cli", "-c", cmd, "--startup-timeout", "30", *addr]
    )
    assert r.exit_code == 0, r.output
    up = json.loads(r.stdout)
    assert up["ok"] and len({e["url"] for e in up["endpoints"]}) == 2
    r = runner.invoke(endpoint_app, ["ls", "-n", "cli", *addr])
    listed = json.loads(r.stdout)["endpoints"]
    assert sorted(e["url"] for e in listed) == sorted(e["url"] for e in up["endpoints"])
    assert all(e["healthy"] and e["restarts"] == 0 and e["command"][-1] == MODEL for e in listed)
    r = runner.invoke(endpoint_app, ["down", "-n", "cli", *addr])
    assert r.exit_code == 0 and len(json.loads(r.stdout)["stopped"]) == 2
    assert not any(running(e["pid"]) for e in listed)
    r = runner.invoke(endpoint_app, ["up", "-c", "server --port 80", *addr])  # no {port}, no --port
    assert r.exit_code == 1 and "{port}" in json.loads(r.stdout)["error"]


def test_cli_without_a_cluster_names_the_fix():
    from sila.cli.endpoint import endpoint_app
    from typer.testing import CliRunner

    r = CliRunner().invoke(endpoint_app, ["ls", "--address", "127.0.0.1:1", "--json"])
    assert r.exit_code == 1 and "ray start --head" in json.loads(r.stdout)["error"]


def test_missing_endpoints_fail_clearly(cluster):
    import ray

    with pytest.raises(EndpointError, match="needs 1 GPU"):
        ensure_node_endpoints(server_spec("gpu", gpus=1))

    @ray.remote(num_cpus=1)
    def ask(spec: EndpointSpec) -> str:
        return endpoint_url_for_current_node(spec)

    with pytest.raises(EndpointError, match="must call ensure_node_endpoints"):
        ray.get(ask.remote(server_spec("never-started")))


@pytest.mark.vllm
@pytest.mark.skipif(not os.environ.get("SILA_TEST_VLLM_URL"), reason="set SILA_TEST_VLLM_URL")
def test_real_vllm_server():
    client = OpenAIClient(os.environ["SILA_TEST_VLLM_URL"], timeout_s=300)
    models = client.models()
    assert models
    reply = client.chat([{"role": "user", "content": "Say OK."}], model=models[0], max_tokens=8)
    assert isinstance(reply, str) and reply.strip()
    schema = {
        "type": "object",
        "properties": {"caption": {"type": "string"}, "ok": {"type": "boolean"}},
        "required": ["caption", "ok"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "caption", "schema": schema}}
    messages = [{"role": "user", "content": "Describe a cat in five words, as JSON."}]
    jsonschema.validate(
        json.loads(client.chat(messages, response_format=fmt, max_tokens=200)), schema
    )
