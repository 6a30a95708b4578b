"""Node-local model endpoints: one server (e.g. `vllm serve`) per Ray node, kept alive by an
actor, and a small OpenAI chat-completions client that stages use to talk to it.

    spec = EndpointSpec(name="captioner", gpus=1,
                        command=["vllm", "serve", "Qwen/Qwen3-VL-8B-Instruct", "--port", "{port}"])
    ensure_node_endpoints(spec)                  # driver: one EndpointActor per node
    url = endpoint_url_for_current_node(spec)    # worker: this node's http://127.0.0.1:PORT/v1
    OpenAIClient(url).chat([{"role": "user", "content": "hi"}])
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import asdict
from typing import Any

from sila.endpoints.openai_client import OpenAIClient, image_part
from sila.endpoints.process import (
    ACTOR_PREFIX,
    EndpointError,
    EndpointProcess,
    EndpointSpec,
    load_endpoint_toml,
)

__all__ = [
    "ACTOR_PREFIX",
    "NAMESPACE",
    "EndpointActor",
    "EndpointError",
    "EndpointProcess",
    "EndpointSpec",
    "OpenAIClient",
    "endpoint_actor_class",
    "endpoint_url_for_current_node",
    "ensure_node_endpoints",
    "image_part",
    "list_endpoints",
    "load_endpoint_toml",
    "stop_endpoints",
]

log = logging.getLogger(__name__)

NAMESPACE = "sila"

# A non-detached named actor is garbage-collected once its creating handle is dropped (a later
# get_if_exists handle does not keep it), so the driver keeps every handle it got.
_HANDLES: dict[str, list[Any]] = {}


class EndpointActor:
    """Owns one EndpointProcess on its node; a monitor thread restarts the server if it dies
    (or fails `unhealthy_after` health checks in a row). `endpoint_actor_class()` is the Ray
    actor; the plain class works without Ray (tests)."""

    def __init__(
        self,
        spec: EndpointSpec,
        log_dir: str | None = None,
        monitor_interval_s: float = 2.0,
        unhealthy_after: int = 3,
    ) -> None:
        import tempfile

        self.spec = spec
        log_dir = (
            log_dir
            or os.environ.get("SILA_ENDPOINT_LOG_DIR")
            or os.path.join(tempfile.gettempdir(), "sila-endpoints")
        )
        self.process = EndpointProcess(spec, log_dir)
        self.monitor_interval_s = monitor_interval_s
        self.unhealthy_after = unhealthy_after
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._restarts = 0

    def start(self) -> str:
        """Start the server if needed, wait until it is healthy, return its URL (idempotent)."""
        with self._lock:
            if not self.process.alive():
                self.process.start()
            self.process.wait_healthy(cancel=self._stopping)
            if self._monitor is None:
                self._monitor = threading.Thread(
                    target=self._watch, daemon=True, name=f"sila-endpoint-{self.spec.name}"
                )
                self._monitor.start()
        return self.process.url

    def url(self) -> str:
        return self.process.url

    def health(self) -> bool:
        return self.process.health()

    def restarts(self) -> int:
        return self._restarts

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "name": self.spec.name,
            "url": self.process.url,
            "pid": self.process.pid,
            "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
            "alive": self.process.alive(),
            "healthy": self.process.health(),
            "restarts": self._restarts,
            "log": str(self.process.log_path),
            "spec": asdict(self.spec),
        }

    def stop(self) -> None:
        """Stop the server for good (a later `start` raises)."""
        self._stopping.set()
        with self._lock:  # a start/restart in progress notices `_stopping` within a second
            self.process.stop()
        if self._monitor is not None:
            self._monitor.join(timeout=self.monitor_interval_s + 5)

    def _watch(self) -> None:
        failures, backoff = 0, 1.0
        while not self._stopping.wait(self.monitor_interval_s):
            with self._lock:
                if self._stopping.is_set():
                    return
                if self.process.alive():
                    failures = 0 if self.process.health(timeout_s=5) else failures + 1
                    if failures < self.unhealthy_after:
                        continue
                    why = f"{failures} failed health checks"
                else:
                    why = f"exit code {self.process.proc.returncode if self.process.proc else '?'}"
                self._restarts += 1
                log.warning(
                    "endpoint '%s' down (%s): restart #%d; log %s",
                    self.spec.name,
                    why,
                    self._restarts,
                    self.process.log_path,
                )
                try:
                    self.process.restart(cancel=self._stopping)
                    failures, backoff = 0, 1.0
                    continue
                except EndpointError as e:
                    if not self._stopping.is_set():
                        log.error("%s", e)
            if self._stopping.wait(backoff):  # a crash loop: back off, outside the lock
                return
            backoff = min(backoff * 2, 60.0)


@functools.cache
def endpoint_actor_class() -> Any:
    """`EndpointActor` as a Ray actor class. It takes no CPU, and `max_concurrency` lets
    health/url calls through while a start or restart holds the lock."""
    import ray

    return ray.remote(num_cpus=0, max_concurrency=4)(EndpointActor)


def _ray_get(refs: Any, what: str, timeout_s: float | None = None) -> Any:
    import ray

    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(e.cause, Exception) else e
        raise EndpointError(f"{what}: {cause}") from e
    except ray.exceptions.GetTimeoutError as e:
        raise EndpointError(f"{what}: no answer within {timeout_s:g} s") from e
    except ray.exceptions.RayActorError as e:
        raise EndpointError(f"{what}: the endpoint actor died ({e})") from e


def ensure_node_endpoints(spec: EndpointSpec, detached: bool = False) -> dict[str, str]:
    """One EndpointActor per alive node with `spec.gpus` GPUs, started and healthy; returns
    {node_id: url}. Named actors in namespace "sila", so repeated calls reuse them; `detached`
    ones outlive this driver (`sila endpoint up`)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [
        n["NodeID"]
        for n in ray.nodes()
        if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) >= spec.gpus
    ]
    if not nodes:
        raise EndpointError(
            f"endpoint '{spec.name}' needs {spec.gpus:g} GPU(s) per node but no "
            "alive Ray node has that many; add GPU nodes or lower `gpus`"
        )
    handles = {
        node_id: endpoint_actor_class()
        .options(
            name=spec.actor_name(node_id),
            namespace=NAMESPACE,
            get_if_exists=True,
            lifetime="detached" if detached else None,
            num_gpus=spec.gpus,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        )
        .remote(spec)
        for node_id in nodes
    }
    infos = _ray_get([h.info.remote() for h in handles.values()], f"endpoint '{spec.name}'")
    for node_id, info in zip(handles, infos, strict=True):
        if info["spec"] != asdict(spec):
            raise EndpointError(
                f"endpoint '{spec.name}' already runs on node {node_id[:8]} with another spec "
                f"({info['spec']['command']}); stop it with `sila endpoint down --name "
                f"{spec.name}` or choose another name"
            )
    for node_id, h in handles.items():
        _HANDLES.setdefault(spec.actor_name(node_id), []).append(h)
    urls = _ray_get(
        [h.start.remote() for h in handles.values()],
        f"endpoint '{spec.name}'",
        timeout_s=spec.startup_timeout_s + 60,
    )
    return dict(zip(handles, urls, strict=True))


def endpoint_url_for_current_node(spec: EndpointSpec) -> str:
    """This node's endpoint URL (from `ensure_node_endpoints`), once the server is healthy."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    try:
        actor = ray.get_actor(spec.actor_name(node_id), namespace=NAMESPACE)
    except ValueError as e:
        raise EndpointError(
            f"no endpoint '{spec.name}' on node {node_id[:8]}: the driver must call "
            "ensure_node_endpoints(spec) before workers start, and only nodes with "
            f"{spec.gpus:g} GPU(s) get one (schedule the workers that call it there)"
        ) from e
    return _ray_get(actor.start.remote(), f"endpoint '{spec.name}' on node {node_id[:8]}")


def list_endpoints(name: str | None = None) -> list[dict[str, Any]]:
    """`info()` of every endpoint actor on the cluster (optionally only those called `name`);
    an actor that does not answer is listed with an `error`."""
    import ray

    out = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        actor = entry["name"]
        if entry["namespace"] != NAMESPACE or not actor.startswith(ACTOR_PREFIX):
            continue
        ep_name = actor[len(ACTOR_PREFIX) :].rsplit("-", 1)[0]
        if name is not None and ep_name != name:
            continue
        try:
            handle = ray.get_actor(actor, namespace=NAMESPACE)
            info = _ray_get(handle.info.remote(), f"endpoint actor {actor}", timeout_s=30)
        except (ValueError, EndpointError) as e:
            info = {"name": ep_name, "error": str(e)}
        out.append({"actor": actor, **info})
    return out


def stop_endpoints(name: str | None = None, timeout_s: float = 60) -> list[str]:
    """Stop the servers and kill the actors of endpoint `name` (all endpoints when None);
    returns the actor names stopped."""
    import ray

    stopped = []
    for info in list_endpoints(name):
        actor = info["actor"]
        try:
            handle = ray.get_actor(actor, namespace=NAMESPACE)
        except ValueError:
            continue  # gone meanwhile
        try:
            _ray_get(handle.stop.remote(), f"stopping {actor}", timeout_s=timeout_s)
        except EndpointError as e:
            log.warning("%s; killing the actor (its guard stops the server)", e)
        ray.kill(handle)
        _HANDLES.pop(actor, None)
        stopped.append(actor)
    return stopped
