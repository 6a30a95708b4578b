"""`sila endpoint up | ls | down`: node-local model servers on a Ray cluster, one per node."""

from __future__ import annotations

import logging
import shlex
import socket
from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.table import Table
from sila.cli.output import JsonOpt, console, emit_json, fail, handle_errors

endpoint_app = typer.Typer(
    help="Node-local model endpoints (e.g. `vllm serve`) on a Ray cluster: one server per node.",
    no_args_is_help=True,
)

AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else the local one)"
    ),
]


def connect(address: str | None, as_json: bool) -> None:
    """Join a running Ray cluster. Endpoint actors outlive this command, so a throwaway local
    Ray started here would be useless: without a cluster, say how to start one."""
    import ray

    fix = "start one with `ray start --head` (or pass --address HOST:PORT of a running cluster)"
    if address and "://" not in address and address not in ("auto", "local"):
        host, _, port = address.rpartition(":")
        try:  # ray.init retries an unreachable address for minutes: probe it first
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        except (OSError, ValueError) as e:
            fail(f"no Ray cluster answers at {address} ({e}); {fix}", as_json)
    if ray.is_initialized():
        return
    try:
        ray.init(
            address=address or "auto",
            namespace="sila",
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except ConnectionError as e:
        fail(
            f"no running Ray cluster {'at ' + address if address else 'found'} ({e}); {fix}",
            as_json,
        )


@endpoint_app.command()
@handle_errors
def up(
    command: Annotated[
        str | None, typer.Option("--command", "-c", help="server command line; {port} is replaced")
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="launch settings file, e.g. infra/vllm/endpoint.toml")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="endpoint name (default: the config's, else default)"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="fixed port (default: a free one per node)")
    ] = None,
    health_path: Annotated[str | None, typer.Option(help="answers 200 when ready")] = None,
    gpus: Annotated[
        float | None, typer.Option(help="GPUs per endpoint (nodes with fewer skip)")
    ] = None,
    startup_timeout: Annotated[
        float | None, typer.Option(help="seconds to wait for health")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE for the server (repeatable)")
    ] = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the endpoint on every node (reusing running ones) and wait until all are healthy.

    Examples: sila endpoint up --config infra/vllm/endpoint.toml;
    sila endpoint up -n captioner --gpus 1 -c "vllm serve Qwen/Qwen3-VL-8B-Instruct --port {port}"
    """
    from sila.endpoints.serve import EndpointSpec, ensure_node_endpoints, load_endpoint_toml

    if (command is None) == (config is None):
        fail(
            "give either --command 'vllm serve MODEL --port {port}' or --config FILE.toml", as_json
        )
    env_vars: dict[str, str] = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--env expects KEY=VALUE, got {item!r}", as_json)
        env_vars[key] = value
    base = (
        load_endpoint_toml(config) if config else EndpointSpec(command=shlex.split(command or ""))
    )
    given = {
        "name": name,
        "port": port,
        "health_path": health_path,
        "gpus": gpus,
        "startup_timeout_s": startup_timeout,
    }
    spec = replace(
        base, **{k: v for k, v in given.items() if v is not None}, env={**base.env, **env_vars}
    )
    if spec.port is None and not any("{port}" in a for a in spec.command):
        fail(
            "the command must contain {port} (where the server is told its port), or pass --port",
            as_json,
        )
    connect(address, as_json)
    if not as_json:
        console.print(
            f"starting endpoint [bold]{spec.name}[/] on every node: {shlex.join(spec.command)}"
        )
    urls = ensure_node_endpoints(spec, detached=True)
    rows = [{"node_id": node, "url": url} for node, url in urls.items()]
    if as_json:
        emit_json({"ok": True, "name": spec.name, "endpoints": rows})
        return
    table = Table("node", "url")
    for r in rows:
        table.add_row(r["node_id"][:8], r["url"])
    console.print(table)
    console.print(f"stop with `sila endpoint down --name {spec.name}`")


@endpoint_app.command("ls")
@handle_errors
def ls(
    name: Annotated[str | None, typer.Option("--name", "-n", help="only this endpoint")] = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List endpoint servers: node, URL, health, restarts, log file."""
    from sila.endpoints.serve import list_endpoints

    connect(address, as_json)
    rows = [_row(info) for info in list_endpoints(name)]
    if as_json:
        emit_json({"ok": True, "endpoints": rows})
        return
    if not rows:
        console.print("no endpoints; start one with `sila endpoint up --command '...'`")
        return
    table = Table("name", "node", "url", "healthy", "restarts", "log")
    for r in rows:
        healthy = "[green]yes[/]" if r["healthy"] else f"[red]no[/] {r.get('error') or ''}"
        table.add_row(
            r["name"],
            (r["node_id"] or "?")[:8],
            r["url"] or "-",
            healthy,
            str(r["restarts"]),
            r["log"] or "-",
        )
    console.print(table)


@endpoint_app.command()
@handle_errors
def down(
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="endpoint (default: all)")
    ] = None,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop endpoint servers and their actors (all endpoints unless --name is given)."""
    from sila.endpoints.serve import stop_endpoints

    connect(address, as_json)
    stopped = stop_endpoints(name)
    if as_json:
        emit_json({"ok": True, "stopped": stopped})
    elif stopped:
        console.print(f"stopped {len(stopped)} endpoint server(s): {', '.join(stopped)}")
    else:
        console.print("no endpoints " + (f"named {name!r} " if name else "") + "were running")


def _row(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("actor", "name", "node_id", "url", "pid", "alive", "healthy", "restarts", "log")
    row = {k: info.get(k) for k in keys}
    row["command"] = (info.get("spec") or {}).get("command")
    row["error"] = info.get("error")
    return row
