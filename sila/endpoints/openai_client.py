"""A tiny OpenAI chat-completions client (what vLLM and most model servers speak)."""

from __future__ import annotations

import base64
import logging
import os
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from sila.endpoints.process import EndpointError

log = logging.getLogger(__name__)


class EndpointUnavailable(EndpointError):
    """Retries were spent on connection errors, timeouts, 429 or 5xx: the server is down or
    overloaded (unlike a 4xx, which says the request itself is wrong)."""


class EndpointRejected(EndpointError):
    """The server refused the request with a 4xx (other than 429); `status` is the code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def image_part(data: bytes, mime: str = "image/jpeg") -> dict[str, Any]:
    """A chat content part carrying an image inline, as OpenAI-compatible servers accept."""
    b64 = base64.b64encode(data).decode()
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64}"}}


class OpenAIClient:
    """Minimal OpenAI chat-completions client with retries on connection errors, 429 and 5xx
    (4xx fail at once, with the server's message). One per thread: it keeps a connection pool.

    Backoff doubles from `backoff_s` up to `max_backoff_s`; with `retry_budget_s` it keeps
    retrying until that many seconds have passed (long enough for a restarted server to come
    back) rather than a fixed number of times. Out of retries: `EndpointUnavailable`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float | None = None,
        retry_budget_s: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.retry_budget_s = retry_budget_s
        self.session = requests.Session()
        if urlsplit(self.base_url).hostname in ("127.0.0.1", "localhost", "::1"):
            self.session.trust_env = False  # node-local: never through an HTTP proxy
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.session.headers["Authorization"] = f"Bearer {key}"
        self._models: list[str] | None = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                r = self.session.request(method, url, json=body, timeout=self.timeout_s)
            except requests.RequestException as e:
                problem = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 400:
                    try:
                        return r.json()
                    except ValueError as e:
                        raise EndpointError(f"{method} {url}: answer is not JSON: {e}") from e
                problem = f"HTTP {r.status_code}: {_error_message(r)}"
                if r.status_code != 429 and r.status_code < 500:
                    raise EndpointRejected(f"{method} {url} failed: {problem}", r.status_code)
            delay = self.backoff_s * 2**attempt
            if self.max_backoff_s is not None:
                delay = min(delay, self.max_backoff_s)
            if self.retry_budget_s is not None:
                more = time.monotonic() - start + delay < self.retry_budget_s
            else:
                more = attempt < self.retries
            if not more:
                break
            attempt += 1
            of = f"/{self.retries}" if self.retry_budget_s is None else ""
            log.warning("%s %s: %s (retry %d%s)", method, url, problem, attempt, of)
            time.sleep(delay)
        raise EndpointUnavailable(
            f"{method} {url} failed after {attempt + 1} attempts "
            f"({time.monotonic() - start:.0f} s): {problem}; "
            "is the endpoint running (`sila endpoint ls`)?"
        )

    def models(self) -> list[str]:
        self._models = [m["id"] for m in self._request("GET", "/models")["data"]]
        return self._models

    def complete(
        self,
        messages: list[dict[str, Any]],
        model: str | None = None,
        temperature: float = 0.0,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The whole `chat.completion` response (choices, usage...). `model` defaults to the
        server's first model; `extra` goes into the request body as is (e.g. `seed`)."""
        if model is None:
            model = (self._models or self.models() or [None])[0]
        body: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
        if response_format is not None:
            body["response_format"] = response_format
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return self._request("POST", "/chat/completions", {**body, **extra})

    def chat(self, messages: list[dict[str, Any]], model: str | None = None, **kwargs: Any) -> str:
        """The assistant's reply text; the options are `complete`'s.

        Example::

            client.chat([{"role": "user", "content": [
                {"type": "text", "text": "Caption this frame."}, image_part(jpeg_bytes)]}])
        """
        out = self.complete(messages, model, **kwargs)
        try:
            return out["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as e:
            raise EndpointError(
                f"malformed chat completion from {self.base_url}: {out!r:.300}"
            ) from e


def _error_message(r: requests.Response) -> str:
    """OpenAI nests the message under "error"; vLLM (some versions) puts it at the top."""
    try:
        body = r.json()
        return str((body.get("error") or body)["message"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return r.text[:300]
