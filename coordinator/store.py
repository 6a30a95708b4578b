"""One object-store layer for SILA's own files (leases, checkpoints, job records).

Everything goes through `obstore`, so the same code serves a local directory and S3/GCS/Azure:
create-if-absent, get, list, overwrite and delete are the only operations the coordinator uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
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


class Store:
    """Keys are relative to `<lake>/_sila/`."""

    def __init__(self, lake_uri: str, storage_options: dict[str, str] | None = None) -> None:
        opts = dict(storage_options or {})
        if is_remote(lake_uri):
            config: dict[str, str] = {}
            client: dict[str, object] = {}
            for k, v in opts.items():
                lk = k.lower()
                if lk in _CLIENT_KEYS:
                    client[lk] = str(v).lower() == "true" if lk == "allow_http" else v
                elif lk in _S3_ALIASES and lake_uri.startswith("s3://"):
                    config[_S3_ALIASES[lk]] = v
                else:
                    config[lk] = v
            self._store = from_url(
                lake_uri.rstrip("/") + "/_sila", config=config or None, client_options=client or None
            )
        else:
            root = Path(local_path(lake_uri)) / "_sila"
            root.mkdir(parents=True, exist_ok=True)
            self._store = LocalStore(str(root), mkdir=True)

    def create(self, key: str, data: bytes) -> bool:
        """Write `key` only if absent. True when this call created it."""
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
        obstore.put(self._store, key, data)

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except FileNotFoundError:
            return None
        except obstore.exceptions.NotFoundError:
            return None

    def list(self, prefix: str) -> list[Entry]:
        out: list[Entry] = []
        for chunk in obstore.list(self._store, prefix=prefix.rstrip("/") + "/" if prefix else None):
            for m in chunk:
                out.append(Entry(m["path"], m["size"], m["last_modified"]))
        return out

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self._store, key)
        except (FileNotFoundError, obstore.exceptions.NotFoundError):
            pass

    def delete_prefix(self, prefix: str) -> int:
        keys = [e.key for e in self.list(prefix)]
        for k in keys:
            self.delete(k)
        return len(keys)


def ensure_local_dir(uri: str) -> None:
    if not is_remote(uri):
        os.makedirs(local_path(uri), exist_ok=True)
