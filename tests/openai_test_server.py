"""TEST DOUBLE of an OpenAI-compatible model server (stands in for `vllm serve` in tests).

It runs no model. Its answers are deterministic and say they are fake: with a `json_schema`
response format it returns a JSON object built from the schema alone (strings "test-double",
numbers 0 or their minimum, arrays of one item, the first enum value); otherwise it describes
the request (messages, images, text length). The HTTP shapes are the real ones: `GET /health`,
`GET /v1/models`, `POST /v1/chat/completions` (id, object, created, model, choices, usage);
`GET /stats` (not OpenAI) reports what it served, for tests to check.

    python tests/openai_test_server.py --port 8000 [--model NAME] [--crash-after N]
        [--fail-first N] [--startup-delay S] [--latency S] [--max-concurrency N]
        [--script valid,invalid,truncated,schema,slow,500] [--script-mode cycle|once]
        [--slow-s S] [--answers rules.json] [--api-key KEY]

`--crash-after N` exits the process (code 3) right after answering its N-th /v1 request, to test
endpoint restarts; `--fail-first N` answers the first N chat requests with HTTP 503, to test
client retries. Health checks are not counted by either.

Misbehaviour for validation tests: `--script` lists what the chat requests get, in arrival
order (cycled, or once and then `valid`): `valid`; `invalid` (prose around JSON: not JSON);
`truncated` (JSON cut in half, finish_reason "length", as when max_tokens is hit); `schema`
(valid JSON missing a required field); `slow` (valid, after `--slow-s` seconds: a client
timeout); `500` (HTTP 500). `--latency S` holds every chat answer S seconds and
`--max-concurrency N` serves at most N at once (the rest queue, like vLLM's max_num_seqs), so
throughput is capped at N / S. `--answers FILE` scripts replies: a JSON list of
{"contains": text, "content": str or object}; the first rule whose text occurs in the request's
messages gives the reply (a judge's scripted verdicts). `--api-key` requires that bearer token.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("openai_test_server")

FAKE_TEXT = "test-double"


def value_for_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A deterministic value that validates against a (common subset of) JSON Schema."""
    root = root if root is not None else schema
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return value_for_schema(node, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return value_for_schema(schema[key][0], root)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(part)
        return value_for_schema(merged, root)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: value_for_schema(sub, root) for name, sub in props.items()}
    if kind == "array":
        n = max(1, int(schema.get("minItems", 1)))
        if "maxItems" in schema:
            n = min(n, int(schema["maxItems"]))
        return [value_for_schema(schema.get("items", {}), root) for _ in range(n)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = max(0, low) if "maximum" not in schema else min(max(0, low), schema["maximum"])
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            value = schema["exclusiveMinimum"] + 1
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    text = FAKE_TEXT
    if "minLength" in schema:
        text = text.ljust(int(schema["minLength"]), "x")
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    return text


def describe(messages: list[dict[str, Any]]) -> tuple[int, int]:
    """(number of image parts, characters of text) over all messages."""
    images = chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
            continue
        for part in content or []:
            if part.get("type") == "image_url":
                images += 1
            elif part.get("type") == "text":
                chars += len(part.get("text", ""))
    return images, chars


BEHAVIOURS = ("valid", "invalid", "truncated", "schema", "slow", "500")


def request_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        parts += [p.get("text", "") for p in content or [] if p.get("type") == "text"]
    return "\n".join(parts)


def violate(value: Any, schema: dict[str, Any]) -> Any:
    """`value` (valid for `schema`) made invalid: its last required property removed."""
    required = schema.get("required") or []
    if isinstance(value, dict) and required:
        value = dict(value)
        value.pop(required[-1], None)
        return value
    return {"not": "what the schema asks"}


def completion(
    body: dict[str, Any],
    model: str,
    behaviour: str = "valid",
    scripted: str | None = None,
) -> dict[str, Any]:
    messages = body["messages"]
    images, chars = describe(messages)
    fmt = body.get("response_format") or {}
    finish = "stop"
    if scripted is not None:
        content = scripted
    elif fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema", {})
        value = value_for_schema(schema)
        content = json.dumps(value)
        if behaviour == "invalid":
            content = f"Sure! Here is the caption you asked for:\n{content}\nHope this helps."
        elif behaviour == "truncated":
            content, finish = content[: max(1, len(content) // 2)], "length"
        elif behaviour == "schema":
            content = json.dumps(violate(value, schema))
    elif fmt.get("type") == "json_object":
        content = json.dumps({"test_double": True, "images": images, "text_chars": chars})
    else:
        content = (
            f"{FAKE_TEXT} reply from {model}: {len(messages)} message(s), "
            f"{images} image(s), {chars} text chars"
        )
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if max_tokens and len(content) > 4 * max_tokens:  # ~4 chars per token, like usage below
            content, finish = content[: 4 * max_tokens], "length"
    prompt_tokens = 1 + chars // 4 + 256 * images
    completion_tokens = 1 + len(content) // 4
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class State:
    def __init__(
        self,
        model: str,
        crash_after: int | None,
        fail_first: int,
        latency_s: float = 0.0,
        max_concurrency: int | None = None,
        script: list[str] | None = None,
        script_mode: str = "cycle",
        slow_s: float = 5.0,
        answers: list[dict[str, Any]] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.model = model
        self.crash_after = crash_after
        self.fail_first = fail_first
        self.latency_s = latency_s
        self.slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        unknown = set(script or []) - set(BEHAVIOURS)
        if unknown:
            raise ValueError(f"unknown --script entries {sorted(unknown)}; known {BEHAVIOURS}")
        self.script = list(script or [])
        self.script_mode = script_mode
        self.slow_s = slow_s
        self.answers = list(answers or [])
        self.api_key = api_key
        self.requests = 0
        self.chats = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.served: dict[str, int] = {}
        self.recent: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def next_behaviour(self) -> str:
        """Called with the lock held, once per chat request."""
        if not self.script:
            return "valid"
        i = self.chats - 1
        if self.script_mode == "once" and i >= len(self.script):
            return "valid"
        return self.script[i % len(self.script)]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "test_double": True,
                "requests": self.requests,
                "chats": self.chats,
                "served": dict(self.served),
                "max_in_flight": self.max_in_flight,
                "recent": list(self.recent),
            }


class Handler(BaseHTTPRequestHandler):
    server_version = "sila-openai-test-double/1"
    state: State  # set on the subclass made by `serve`

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.info("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}})

    def _counted(self) -> None:
        """Count a /v1 request; exit after answering the N-th one when --crash-after N."""
        with self.state.lock:
            self.state.requests += 1
            crash = self.state.crash_after is not None and (
                self.state.requests >= self.state.crash_after
            )
        if crash:
            log.warning("--crash-after %s reached: exiting", self.state.crash_after)
            os._exit(3)

    def _authorized(self) -> bool:
        if not self.state.api_key:
            return True
        if self.headers.get("Authorization") == f"Bearer {self.state.api_key}":
            return True
        self._error(401, "test double: missing or wrong API key", "authentication_error")
        return False

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if self.path == "/health":
            self._send(200, {"status": "ok", "test_double": True})
        elif self.path == "/stats":
            self._send(200, self.state.stats())
        elif self.path.startswith("/v1/") and not self._authorized():
            return
        elif self.path == "/v1/models":
            owned = {"id": self.state.model, "object": "model", "owned_by": "sila-test-double"}
            self._send(200, {"object": "list", "data": [{**owned, "created": 0}]})
            self._counted()
        else:
            self._error(404, f"no route GET {self.path}", "not_found_error")

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        if self.path != "/v1/chat/completions":
            self._error(404, f"no route POST {self.path}", "not_found_error")
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except (ValueError, json.JSONDecodeError) as e:
            self._error(400, f"request body is not JSON: {e}")
            return
        if not self._authorized():
            return
        with self.state.lock:
            self.state.chats += 1
            failing = self.state.chats <= self.state.fail_first
            behaviour = self.state.next_behaviour()
        if failing:
            self._error(503, "test double: --fail-first is answering 503", "server_error")
        elif not isinstance(body.get("messages"), list) or not body["messages"]:
            self._error(400, "'messages' must be a non-empty list")
        elif body.get("model") not in (None, self.state.model):
            self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        else:
            self._answer(body, behaviour)
        self._counted()

    def _answer(self, body: dict[str, Any], behaviour: str) -> None:
        st = self.state
        if st.slots is not None:
            st.slots.acquire()  # like a server's max_num_seqs: the rest wait their turn
        try:
            with st.lock:
                st.in_flight += 1
                st.max_in_flight = max(st.max_in_flight, st.in_flight)
                st.served[behaviour] = st.served.get(behaviour, 0) + 1
                images, _ = describe(body["messages"])
                fmt = (body.get("response_format") or {}).get("type")
                st.recent = [
                    *st.recent[-49:],
                    {"behaviour": behaviour, "images": images, "response_format": fmt,
                     "messages": len(body["messages"]), "max_tokens": body.get("max_tokens")},
                ]  # fmt: skip
            time.sleep(st.latency_s + (st.slow_s if behaviour == "slow" else 0.0))
            if behaviour == "500":
                self._error(500, "test double: scripted internal server error", "server_error")
                return
            text = request_text(body["messages"])
            rule = next((r for r in st.answers if r["contains"] in text), None)
            scripted = None
            if rule is not None:
                c = rule["content"]
                scripted = c if isinstance(c, str) else json.dumps(c)
            try:
                self._send(200, completion(body, st.model, behaviour, scripted))
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass
        finally:
            with st.lock:
                st.in_flight -= 1
            if st.slots is not None:
                st.slots.release()
        self._counted()


def serve(
    port: int,
    model: str,
    crash_after: int | None = None,
    fail_first: int = 0,
    host: str = "127.0.0.1",
    **behaviour: Any,
) -> ThreadingHTTPServer:
    """Build the server (bound, not yet serving); `port=0` picks a free port. `behaviour`:
    State's options (latency_s, max_concurrency, script, script_mode, slow_s, answers,
    api_key); `server.RequestHandlerClass.state` is the live State."""
    state = State(model, crash_after, fail_first, **behaviour)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.request_queue_size = 128  # a burst of concurrent clients must not be refused
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model", default="sila-test-double")
    parser.add_argument("--crash-after", type=int, default=None)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds before binding")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat answer")
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--script", default="", help=f"comma list of {', '.join(BEHAVIOURS)}")
    parser.add_argument("--script-mode", choices=["cycle", "once"], default="cycle")
    parser.add_argument("--slow-s", type=float, default=5.0)
    parser.add_argument("--answers", default=None, help="JSON file of scripted replies")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    time.sleep(args.startup_delay)  # imitates model loading: /health is unreachable meanwhile
    answers = None
    if args.answers:
        with open(args.answers) as f:
            answers = json.load(f)
    server = serve(
        args.port,
        args.model,
        args.crash_after,
        args.fail_first,
        args.host,
        latency_s=args.latency,
        max_concurrency=args.max_concurrency,
        script=[x.strip() for x in args.script.split(",") if x.strip()],
        script_mode=args.script_mode,
        slow_s=args.slow_s,
        answers=answers,
        api_key=args.api_key,
    )
    log.info(
        "TEST DOUBLE serving model %r on http://%s:%d/v1",
        args.model,
        args.host,
        server.server_address[1],
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
