"""Secrets never reach job records or logs: settings whose name looks secret are masked."""

from __future__ import annotations

from typing import Any

from sila.coordinator.ops.jobs import SECRET_WORDS


def is_secret_name(name: str) -> bool:
    """`api_key`, `token`, `password` ... as whole words (not `max_tokens`), and not
    `api_key_env` (it names a variable)."""
    parts = name.lower().replace("-", "_").split("_")
    return parts[-1] != "env" and any(p in SECRET_WORDS or p == "apikey" for p in parts)


def redact_settings(conf: dict[str, Any]) -> dict[str, Any]:
    return {k: "***" if is_secret_name(k) and v not in (None, "") else v for k, v in conf.items()}
