"""Where an export writes: a local folder (temporary name, then rename) or an object-store
prefix (through obstore, the store SILA uses for its own files)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class Out:
    """The export's destination: a local folder or an object-store prefix."""

    def __init__(self, uri: str, storage_options: dict[str, str]):
        self.uri = uri.rstrip("/")
        self.remote = "://" in uri and not uri.startswith("file://")
        if self.remote:
            from sila.coordinator.store import open_store

            self.store = open_store(self.uri, storage_options)
        else:
            self.root = Path(uri.removeprefix("file://"))
            self.root.mkdir(parents=True, exist_ok=True)

    def read(self, key: str) -> bytes | None:
        if self.remote:
            import obstore

            try:
                return bytes(obstore.get(self.store, key).bytes())
            except FileNotFoundError:
                return None
        p = self.root / key
        return p.read_bytes() if p.is_file() else None

    def put_file(self, key: str, local: Path) -> None:
        if self.remote:
            import obstore

            obstore.put(self.store, key, local)
            local.unlink()
        else:
            dest = self.root / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, dest)

    def put(self, key: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=None if self.remote else self.root, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self.put_file(key, Path(tmp))

    def tmpdir(self) -> str | None:
        return None if self.remote else str(self.root)


def remove_export_tmp(out: str) -> None:
    """Leftover temporary shards of a killed run (they are never renamed into place)."""
    p = Path(out)
    if p.is_dir():
        for t in p.glob(".tmp-*"):
            t.unlink(missing_ok=True)
    shutil.rmtree(p / ".sila-export" / "tmp", ignore_errors=True)
