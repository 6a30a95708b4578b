"""One object-store layer for SILA's own files (leases, checkpoints, job records).

Everything goes through `obstore`, so the same code serves a local directory and S3/GCS/Azure:
create-if-absent, get, list, overwrite and delete are the only operations the coordinator uses.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import obstore
from obstore.store import LocalStore, from_url

# Lance-style storage option names -> obstore config names
_S3_ALIASES = {
    "aws_endpoint": "endpoint",
    "aws_endpoint_url": "endpoint",
    "endpoint_url": "endpoint",
    "aws_region": "region",
    "aws_access_key_id": "access_key_id",
    "aws_secret_access_key": "secret_access_key",
    "aws_session_token": "session_token",
    "access_key_id": "access_key_id",
    "secret_access_key": "secret_access_key",
    "region": "region",
    "endpoint": "endpoint",
    "session_token": "session_token",
}
_CLIENT_KEYS = {"allow_http", "timeout", "connect_timeout"}


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    modified: datetime


def env_storage_options(uri: str) -> dict[str, str]:
    """Credentials and endpoint from the standard environment variables (explicit options win)."""
    out: dict[str, str] = {}
    if uri.startswith("s3://"):
        for env, key in (
            ("AWS_ENDPOINT_URL", "aws_endpoint"),
            ("AWS_ENDPOINT_URL_S3", "aws_endpoint"),
            ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
            ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
            ("AWS_SESSION_TOKEN", "aws_session_token"),
            ("AWS_DEFAULT_REGION", "aws_region"),
            ("AWS_REGION", "aws_region"),
            ("AWS_ALLOW_HTTP", "allow_http"),
        ):
            if os.environ.get(env):
                out[key] = os.environ[env]
        if out.get("aws_endpoint", "").startswith("http://"):
            out.setdefault("allow_http", "true")
    return out


def open_store(url: str, storage_options: dict[str, str] | None = None):
    """An obstore store for an object-store URL, configured like Lance is (same option names)."""
    config: dict[str, str] = {}
    client: dict[str, object] = {}
    for k, v in (storage_options or {}).items():
        lk = k.lower()
        if lk in _CLIENT_KEYS:
            client[lk] = str(v).lower() == "true" if lk == "allow_http" else v
        elif lk in _S3_ALIASES and url.startswith("s3://"):
            config[_S3_ALIASES[lk]] = v
        else:
            config[lk] = v
    client.setdefault("timeout", "30s")  # a dead endpoint fails, never hangs
    client.setdefault("connect_timeout", "5s")
    return from_url(
        url,
        config=config or None,
        client_options=client or None,
        retry_config={"max_retries": 2, "retry_timeout": timedelta(seconds=20)},
    )


class Store:
    """Keys are relative to `<lake>/_sila/`. `Store.requests` counts calls per kind (benchmarks)."""

    requests: Counter[str] = Counter()

    def __init__(self, lake_uri: str, storage_options: dict[str, str] | None = None) -> None:
        self._local: Path | None = None  # local stores keep empty directories: see prune_dir
        if is_remote(lake_uri):
            base = lake_uri.rstrip("/")
            self._store = open_store(base + "/_sila", storage_options)
            self._root = open_store(base, storage_options)
        else:
            root = Path(local_path(lake_uri)) / "_sila"
            root.mkdir(parents=True, exist_ok=True)
            self._store = LocalStore(str(root), mkdir=True)
            self._root = LocalStore(str(root.parent))
            self._local = root

    def lake_dirs(self) -> list[str]:
        """Names of the top-level 'directories' of the lake (tables end in .lance)."""
        res = obstore.list_with_delimiter(self._root)
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in res["common_prefixes"]]

    def create(self, key: str, data: bytes) -> bool:
        """Write `key` only if absent. True when this call created it."""
        Store.requests["put"] += 1
        try:
            obstore.put(self._store, key, data, mode="create")
            return True
        except obstore.exceptions.AlreadyExistsError:
            return False
        except Exception as e:  # some stores report a failed precondition instead
            if "PreconditionFailed" in repr(e) or "AlreadyExists" in repr(e):
                return False
            raise

    def put(self, key: str, data: bytes) -> None:
        """Write `key` whole (an object appears complete or not at all)."""
        Store.requests["put"] += 1
        obstore.put(self._store, key, data)

    def get(self, key: str) -> bytes | None:
        Store.requests["get"] += 1
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except FileNotFoundError:
            return None
        except obstore.exceptions.NotFoundError:
            return None

    def list(self, prefix: str) -> list[Entry]:
        Store.requests["list"] += 1
        out: list[Entry] = []
        for chunk in obstore.list(self._store, prefix=prefix.rstrip("/") + "/" if prefix else None):
            for m in chunk:
                out.append(Entry(m["path"], m["size"], m["last_modified"]))
        return out

    def delete(self, key: str) -> None:
        Store.requests["delete"] += 1
        try:
            obstore.delete(self._store, key)
        except (FileNotFoundError, obstore.exceptions.NotFoundError):
            pass

    def prune_dir(self, prefix: str) -> None:
        """Remove `prefix` if it is an empty local directory (object stores have none): a local
        listing walks every directory, so empty ones would cost as much as files."""
        if self._local is not None:
            try:
                os.rmdir(self._local / prefix)
            except OSError:
                pass  # not empty (a new lease), or gone already

    def delete_prefix(self, prefix: str) -> int:
        keys = [e.key for e in self.list(prefix)]
        for k in keys:
            self.delete(k)
        return len(keys)


def ensure_local_dir(uri: str) -> None:
    if not is_remote(uri):
        os.makedirs(local_path(uri), exist_ok=True)
