"""Durable segment checkpoints: `checkpoints/<table>/<stage>/<fragment-key>/<segment>.arrow`.

A checkpoint is one Arrow IPC object written whole; it is reused only for the same work: the
same work identity (stage version, effective settings, model), the same row selection and the
same segment bounds, and only when its offsets and row count match the segment's. Anything else
is discarded and counted, so a resume after a change gives exactly an uninterrupted run's table.
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
    def __init__(self, store: Store, table: str, stage: str, identity: str) -> None:
        self.store, self.identity = store, identity
        self.prefix = f"checkpoints/{table}/{stage}"
        self.discarded = 0  # checkpoints found but not for this work (counted in the job record)

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
        bounds: tuple[int, int] = (0, 0),
    ) -> None:
        meta = {
            "identity": self.identity,
            "selection": signature,
            "bounds": f"{bounds[0]}-{bounds[1]}",
        }
        if children is not None:  # children first: the segment file's presence implies them
            self.store.put(self._key(fragment, segment, ".children"), _ipc(children, meta))
        tbl = pa.Table.from_batches([outputs]).append_column(OFFSET, pa.array(offsets, pa.uint32()))
        self.store.put(
            self._key(fragment, segment), _ipc(tbl, {**meta, "children": str(children is not None)})
        )

    def load(
        self,
        fragment: str,
        segment: int,
        signature: str,
        offsets: np.ndarray | None = None,
        bounds: tuple[int, int] | None = None,
    ) -> tuple[pa.RecordBatch, pa.Table | None] | None:
        """The segment's saved outputs, only if saved for exactly this work (else None)."""
        raw = self.store.get(self._key(fragment, segment))
        if raw is None:
            return None
        try:
            tbl = _read(raw)
        except (pa.ArrowInvalid, OSError):
            return self._discard()  # unreadable: recompute the segment
        meta = {k.decode(): v.decode() for k, v in (tbl.schema.metadata or {}).items()}
        if meta.get("identity") != self.identity or meta.get("selection") != signature:
            return self._discard()
        if bounds is not None and meta.get("bounds") != f"{bounds[0]}-{bounds[1]}":
            return self._discard()
        if offsets is not None and (
            OFFSET not in tbl.schema.names
            or tbl.num_rows != len(offsets)
            or not np.array_equal(tbl.column(OFFSET).to_numpy(), offsets.astype(np.uint32))
        ):
            return self._discard()
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

    def _discard(self) -> None:
        self.discarded += 1
        return None

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
