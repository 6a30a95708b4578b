"""Durable segment checkpoints: `checkpoints/<table>/<stage>/<fragment-key>/<segment>.arrow`.

A checkpoint is one Arrow IPC object written whole; it is reused only by the same stage
version over the same row selection, so a stale checkpoint can never be applied.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
from sila.coordinator.store import Store

OFFSET = "_offset"


def selection_signature(offsets: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(offsets, dtype=np.uint32).tobytes()).hexdigest()[:16]


def _ipc(table: pa.Table, meta: dict[str, str]) -> bytes:
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _read(raw: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(raw)).read_all()


class Checkpoints:
    def __init__(self, store: Store, table: str, stage: str, version: str) -> None:
        self.store, self.version = store, version
        self.prefix = f"checkpoints/{table}/{stage}"

    def _key(self, fragment: str, segment: int, suffix: str = "") -> str:
        return f"{self.prefix}/{fragment}/{segment:06d}{suffix}.arrow"

    def save(
        self,
        fragment: str,
        segment: int,
        signature: str,
        outputs: pa.RecordBatch,
        offsets: np.ndarray,
        children: pa.Table | None,
    ) -> None:
        meta = {"stage_version": self.version, "selection": signature}
        if children is not None:  # children first: the segment file's presence implies them
            self.store.put(self._key(fragment, segment, ".children"), _ipc(children, meta))
        tbl = pa.Table.from_batches([outputs]).append_column(OFFSET, pa.array(offsets, pa.uint32()))
        self.store.put(
            self._key(fragment, segment), _ipc(tbl, {**meta, "children": str(children is not None)})
        )

    def load(
        self, fragment: str, segment: int, signature: str
    ) -> tuple[pa.RecordBatch, pa.Table | None] | None:
        raw = self.store.get(self._key(fragment, segment))
        if raw is None:
            return None
        try:
            tbl = _read(raw)
        except (pa.ArrowInvalid, OSError):
            return None  # unreadable: recompute the segment
        meta = {k.decode(): v.decode() for k, v in (tbl.schema.metadata or {}).items()}
        if meta.get("stage_version") != self.version or meta.get("selection") != signature:
            return None
        children = None
        if meta.get("children") == "True":
            craw = self.store.get(self._key(fragment, segment, ".children"))
            if craw is None:
                return None
            children = _read(craw).replace_schema_metadata(None)
        out = tbl.drop_columns([OFFSET]).replace_schema_metadata(None).combine_chunks()
        batches = out.to_batches()
        batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=out.schema)
        return batch, children

    def segments(self, fragment: str) -> set[int]:
        """Indexes of the segments checkpointed for `fragment` (one list call)."""
        out = set()
        for e in self.store.list(f"{self.prefix}/{fragment}"):
            name = e.key.rsplit("/", 1)[-1]
            if (
                name.endswith(".arrow")
                and not name.endswith(".children.arrow")
                and name[:-6].isdigit()
            ):
                out.add(int(name[:-6]))
        return out

    def count(self, fragment: str) -> int:
        return sum(
            1
            for e in self.store.list(f"{self.prefix}/{fragment}")
            if not e.key.endswith(".children.arrow")
        )

    def clear(self, fragment: str) -> None:
        self.store.delete_prefix(f"{self.prefix}/{fragment}")
