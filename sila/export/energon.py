"""Megatron-Energon's `.nv-meta/` for an export, written from the offsets the export recorded,
so `energon` reads the shards without its `prepare` pass over every tar.

Files (the layout Energon 7 reads): `.info.json` (samples per shard), `split.yaml` (shards per
split), `dataset.yaml` (a crude sample type: the loader gets the raw parts), `index.sqlite`
(sample and part byte offsets) and `index.uuid`, plus one `<shard>.tar.idx` per shard (the
byte offset of every sample and of the end). The uuid is derived from the plan, so a re-run
writes the same bytes.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import tempfile
import uuid
from pathlib import Path

ENERGON_VERSION = "7.4.1"  # the format version these files follow


def _yaml(obj, indent: int = 0) -> str:
    """Tiny YAML writer for plain dicts/lists of strings (no dependency, stable output)."""
    pad = "  " * indent
    lines = []
    for k, v in obj.items():
        if isinstance(v, dict):
            lines.append(f"{pad}{k}:")
            lines.append(_yaml(v, indent + 1))
        elif isinstance(v, list):
            lines.append(f"{pad}{k}:" + (" []" if not v else ""))
            lines += [f"{pad}  - {json.dumps(x)}" for x in v]
        else:
            lines.append(f"{pad}{k}: {json.dumps(v)}")
    return "\n".join(lines)


def write_energon_meta(out, plan: dict, records: list[dict]) -> None:
    """Write `.nv-meta` beside the shards (`out` is sila.export.wds.Out)."""
    subset = plan["config"].get("subset")
    prefix = f"{subset}/" if subset else ""
    root = f"{prefix}.nv-meta"

    def rel(name: str) -> str:
        return name[len(prefix) :] if prefix and name.startswith(prefix) else name

    info = {
        "energon_version": ENERGON_VERSION,
        "shard_counts": {rel(r["name"]): r["count"] for r in records},
    }
    out.put(f"{root}/.info.json", json.dumps(info, indent=2).encode())
    splits: dict[str, list[str]] = {}
    for r in records:
        splits.setdefault(r["split"], []).append(rel(r["name"]))
    for name in ("train", "val", "test"):
        splits.setdefault(name, [])
    out.put(f"{root}/split.yaml", (_yaml({"split_parts": splits, "exclude": []}) + "\n").encode())
    dataset = {
        "__module__": "megatron.energon",
        "__class__": "CrudeWebdataset",
        "subflavors": {"source": "sila", "subset": subset or "all"},
    }
    out.put(f"{root}/dataset.yaml", (_yaml(dataset) + "\n").encode())
    out.put(
        f"{root}/index.uuid",
        str(uuid.uuid5(uuid.NAMESPACE_URL, plan["config_hash"] + (subset or ""))).encode(),
    )
    for r in records:
        idx = b"".join(struct.pack("Q", s["offset"]) for s in r["samples"]) + struct.pack(
            "Q", r["end"]
        )
        out.put(r["name"][: -len(".tar")] + ".tar.idx", idx)
    with tempfile.TemporaryDirectory(prefix="sila-energon-") as d:
        db_path = Path(d) / "index.sqlite"
        db = sqlite3.connect(db_path)
        db.execute(
            "CREATE TABLE samples (tar_file_id INTEGER NOT NULL, sample_key TEXT NOT NULL UNIQUE,"
            " sample_index INTEGER NOT NULL, byte_offset INTEGER, byte_size INTEGER)"
        )
        db.execute(
            "CREATE TABLE sample_parts (tar_file_id INTEGER, sample_index INTEGER, part_name TEXT,"
            " content_byte_offset INTEGER, content_byte_size INTEGER)"
        )
        for tar_id, r in enumerate(records):
            db.executemany(
                "INSERT INTO samples VALUES (?, ?, ?, ?, ?)",
                [(tar_id, s["key"], i, s["offset"], s["size"]) for i, s in enumerate(r["samples"])],
            )
            db.executemany(
                "INSERT INTO sample_parts VALUES (?, ?, ?, ?, ?)",
                [
                    (tar_id, i, p["name"], p["offset"], p["size"])
                    for i, s in enumerate(r["samples"])
                    for p in s["parts"]
                ],
            )
        db.execute("CREATE INDEX idx_samples_sample_key ON samples(sample_key)")
        db.execute("CREATE INDEX idx_samples_by_tar_and_idx ON samples(tar_file_id, sample_index)")
        db.execute(
            "CREATE INDEX idx_sample_parts_seq ON sample_parts(tar_file_id, sample_index,"
            " content_byte_offset)"
        )
        db.execute(
            "CREATE INDEX idx_sample_parts_full ON sample_parts(tar_file_id, sample_index,"
            " part_name, content_byte_offset, content_byte_size)"
        )
        db.commit()
        db.close()
        out.put(f"{root}/index.sqlite", db_path.read_bytes())
