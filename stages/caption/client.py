"""Talking to the captioner: many chat requests in flight, retries and failover, and a
validation loop that lets only schema-valid JSON through.

`Endpoints` holds one OpenAIClient per thread and URL; retries (connection errors, timeouts,
429, 5xx) back off within a time budget long enough for a restarted server to come back, then
fail over to the next URL. `ask_json` parses and validates every answer; a truncated answer,
invalid JSON or a schema miss is sent back with a repair prompt, up to a limit.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from sila.stages.caption.prompt import repair_messages, response_format

from sila.endpoints.openai_client import EndpointError, EndpointUnavailable, OpenAIClient

log = logging.getLogger(__name__)


@dataclass
class Usage:
    """Summed over every call made for one row (repairs and quadrant regions included)."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    repairs: int = 0
    model: str | None = None

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.output_tokens += other.output_tokens
        self.calls += other.calls
        self.repairs += other.repairs
        self.model = other.model or self.model


@dataclass
class JsonAnswer:
    value: Any | None  # schema-valid object, or None
    raw: str  # the last answer's text, as the model wrote it
    problem: str | None  # why no valid value
    usage: Usage = field(default_factory=Usage)


class Unusable(Exception):
    """An answer that is not schema-valid JSON; `truncated` when the token limit cut it."""

    def __init__(self, problem: str, truncated: bool = False) -> None:
        super().__init__(problem)
        self.truncated = truncated


def parse_valid(text: str, finish_reason: str | None, validator) -> Any:
    """The answer as a schema-valid object, or `Unusable` saying what is wrong with it."""
    if finish_reason == "length":
        raise Unusable("the answer hit the token limit and was cut off mid-JSON", truncated=True)
    body = text.strip()
    if body.startswith("```") and body.endswith("```"):  # a fenced block: the JSON inside
        body = body.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except ValueError as e:
        cut = getattr(e, "pos", 0) >= len(body) - 1
        raise Unusable(f"not valid JSON ({e})", truncated=cut) from None
    errors = sorted(validator.iter_errors(value), key=lambda err: list(err.absolute_path))
    if errors:
        shown = "; ".join(
            f"at {'/'.join(map(str, err.absolute_path)) or 'top level'}: {err.message[:200]}"
            for err in errors[:3]
        )
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        raise Unusable(f"JSON does not match the schema: {shown}{more}")
    return value


def _no_constant(name: str):
    """NaN and Infinity are Python's JSON extensions, not JSON: refuse them."""
    raise ValueError(f"{name} is not valid JSON")


def validator_for(schema: dict[str, Any]):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


@dataclass
class EndpointOptions:
    urls: list[str]
    api_key: str | None = None
    model: str | None = None  # None: the server's first model
    timeout_s: float = 300.0
    retry_budget_s: float = 300.0
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    breaker_s: float = 30.0  # after a request gives up, others fail fast for this long
    structured: str = "response_format"  # | "structured_outputs" (vLLM extra) | "none"
    temperature: float = 0.7
    max_tokens: int = 4096
    extra_body: dict[str, Any] = field(default_factory=dict)


class Endpoints:
    """The captioner's servers: the node-local one and/or remote ones, in failover order."""

    def __init__(self, opts: EndpointOptions) -> None:
        if not opts.urls:
            raise EndpointError("no caption endpoint URL")
        self.opts = opts
        self._local = threading.local()
        self._lock = threading.Lock()
        self._active = 0
        self._down_until = 0.0
        self._down_why = ""
        self.failovers = 0

    def _client(self, url: str) -> OpenAIClient:
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if url not in clients:
            o = self.opts
            clients[url] = OpenAIClient(
                url,
                api_key=o.api_key,
                timeout_s=o.timeout_s,
                backoff_s=o.backoff_s,
                max_backoff_s=o.max_backoff_s,
                retry_budget_s=o.retry_budget_s,
            )
        return clients[url]

    def model(self) -> str:
        """The model to ask for: the setting, else the first one the server lists (asked of
        the endpoints in failover order)."""
        if self.opts.model:
            return self.opts.model
        last: EndpointUnavailable | None = None
        for _ in range(len(self.opts.urls)):
            with self._lock:
                i = self._active
            url = self.opts.urls[i]
            try:
                models = self._client(url).models()
            except EndpointUnavailable as e:
                last = e
                self._fail_over(i, e)
                continue
            if not models:
                raise EndpointError(f"the endpoint at {url} serves no model")
            self.opts.model = models[0]
            return models[0]
        assert last is not None
        raise last

    def _fail_over(self, i: int, why: Exception) -> None:
        with self._lock:
            if self._active == i and len(self.opts.urls) > 1:
                self._active = (i + 1) % len(self.opts.urls)
                self.failovers += 1
                log.warning("caption: %s; failing over to %s", why, self.opts.urls[self._active])

    def complete(self, messages: list[dict[str, Any]], schema: dict[str, Any] | None) -> dict:
        """One chat completion, constrained to `schema`; retried and failed over."""
        o = self.opts
        body: dict[str, Any] = dict(o.extra_body)
        fmt = None
        if schema is not None and o.structured == "response_format":
            fmt = response_format(schema)
        elif schema is not None and o.structured == "structured_outputs":
            body["structured_outputs"] = {"json": schema}
        last: EndpointUnavailable | None = None
        for _ in range(len(o.urls)):
            with self._lock:
                if time.monotonic() < self._down_until:
                    raise EndpointUnavailable(f"caption endpoint unavailable: {self._down_why}")
                i = self._active
            try:
                return self._client(o.urls[i]).complete(
                    messages,
                    model=self.model(),
                    temperature=o.temperature,
                    response_format=fmt,
                    max_tokens=o.max_tokens,
                    **body,
                )
            except EndpointUnavailable as e:
                last = e
                self._fail_over(i, e)
        assert last is not None
        with self._lock:
            self._down_until = time.monotonic() + o.breaker_s
            self._down_why = str(last)
        raise last


def ask_json(
    endpoints: Endpoints,
    messages: list[dict[str, Any]],
    schema: dict[str, Any],
    validator,
    max_repairs: int,
) -> JsonAnswer:
    """Ask until the answer is schema-valid JSON, repairing at most `max_repairs` times.
    Endpoint failures (after retries and failover) raise; bad answers never do."""
    usage = Usage()
    raw, problem = "", None
    for attempt in range(max_repairs + 1):
        out = endpoints.complete(messages, schema)
        usage.calls += 1
        usage.repairs += attempt > 0
        u = out.get("usage") or {}
        usage.prompt_tokens += int(u.get("prompt_tokens") or 0)
        usage.output_tokens += int(u.get("completion_tokens") or 0)
        usage.model = out.get("model") or usage.model
        try:
            choice = out["choices"][0]
            raw = choice["message"].get("content") or ""
            finish = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            raw, finish = json.dumps(out)[:4000], None
            problem = "malformed chat completion (no choices[0].message)"
            continue
        try:
            return JsonAnswer(parse_valid(raw, finish, validator), raw, None, usage)
        except Unusable as e:
            problem = str(e)
            log.info("caption: unusable answer (%s), attempt %d", problem, attempt + 1)
            messages = repair_messages(messages, raw, problem, e.truncated)
    return JsonAnswer(None, raw, problem, usage)
