"""Episodes into `sources`: one row per episode (by reference), trajectories as typed columns.

Reading and checking the layouts lives in `sila.episodes.layout` / `sila.episodes.lerobot`; this module turns
checked episodes into rows and appends them (ids are content hashes: re-ingest adds nothing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from sila.episodes.layout import EPISODE_FIELDS, Episode, EpisodeError, find_datasets, read_dataset
from sila.schema import INGEST, owned

log = logging.getLogger(__name__)


def _file_digest(path: str, cache: dict[str, str]) -> str:
    if path not in cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        cache[path] = h.hexdigest()
    return cache[path]


# Episodes are written in batches of at most this many rows or trajectory bytes, so ingest
# holds one batch, not the dataset (a 10-minute episode at 30 fps is ~7 MB of float32 streams).
BATCH_ROWS = 64
BATCH_BYTES = 128 << 20


def _poses(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else a.reshape(len(a), 16).astype(np.float32)


def _per_frame(a: np.ndarray | None, width: int) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.float32).reshape(len(a), width)


def nested_array(values: list, field: pa.Field) -> pa.Array:
    """A column of per-row numpy arrays ((frames, width) or (frames,), None for null) as the
    field's list type, built from one flat buffer: no Python object per number."""
    if not any(isinstance(v, np.ndarray) for v in values):
        return pa.array(values, type=field.type)
    nested = pa.types.is_list(field.type.value_type)
    steps = np.array([0 if v is None else len(v) for v in values], dtype=np.int64)
    flat = np.concatenate(
        [v.reshape(-1).astype(np.float32) for v in values if v is not None]
        or [np.zeros(0, np.float32)]
    )
    leaf = pa.array(flat)
    if nested:
        width = next(v.shape[1] for v in values if v is not None)
        inner = np.arange(0, len(flat) + 1, width, dtype=np.int32)
        leaf = pa.ListArray.from_arrays(pa.array(inner), leaf)
    outer = pa.array(np.concatenate([[0], np.cumsum(steps)]).astype(np.int32))
    mask = pa.array([v is None for v in values])
    return pa.ListArray.from_arrays(outer, leaf, mask=mask).cast(field.type)


def episode_row(ep: Episode, digests: dict[str, str]) -> dict:
    h = hashlib.sha256(_file_digest(ep.video, digests).encode())
    h.update(f"{ep.video_offset_s:.6f}/{ep.frames}/{ep.index}".encode())
    for k in sorted(ep.poses):
        h.update(k.encode() + ep.poses[k].astype(np.float32).tobytes())
    layout = {"cameras": list(ep.cameras), "canvas": [[name] for name in ep.cameras]}
    return {
        "id": h.hexdigest()[:32],
        "uri": ep.video,
        "filename": os.path.basename(ep.video),
        "media_kind": "episode",
        "size_bytes": os.path.getsize(ep.video),
        "stored": "reference",
        "ingested_at": datetime.now(UTC),
        "container": "mp4",
        "duration_s": ep.frames / ep.fps,
        "fps": ep.fps,
        "frame_count": ep.frames,
        "width": ep.width,
        "height": ep.height,
        "embodiment": ep.embodiment,
        "episode_index": ep.index,
        "session_id": ep.session_id,
        "episode_success": ep.success,
        "language": ep.language,
        "cameras": list(ep.cameras),
        "camera_uris": list(ep.cameras.values()),
        "camera_layout": json.dumps(layout),
        "video_offset_s": ep.video_offset_s,
        "camera_offsets_s": [ep.camera_offsets.get(k, ep.video_offset_s) for k in ep.cameras],
        "episode_fps": ep.fps,
        "episode_frames": ep.frames,
        "traj_ego": _poses(ep.poses.get("ego")),
        "traj_left_wrist": _poses(ep.poses.get("left_wrist")),
        "traj_right_wrist": _poses(ep.poses.get("right_wrist")),
        "traj_ee": _poses(ep.poses.get("ee")),
        "traj_left_fingers": _per_frame(ep.fingers.get("left"), 15),
        "traj_right_fingers": _per_frame(ep.fingers.get("right"), 15),
        "traj_gripper": None if ep.gripper is None else ep.gripper.astype(np.float32).reshape(-1),
        "traj_imu": _per_frame(ep.imu, 6),
        "intrinsics": ep.intrinsics,
        "episode_meta": json.dumps(ep.meta, default=str),
    }


def ingest_episodes(lake, datasets: list[tuple[str, str]]) -> dict:
    """Add the episodes of `datasets` to `sources`; returns {added, present, fragments, failed,
    failures}. A bad episode is a failure naming it; the others are written."""
    rows: list[dict] = []
    failures: list[dict] = []
    digests: dict[str, str] = {}
    totals = [0, 0, 0]  # added, present, fragments
    held = 0  # trajectory bytes of `rows`

    def flush() -> None:
        nonlocal held
        for i, n in enumerate(_write(lake, rows)):
            totals[i] += n
        rows.clear()
        held = 0

    for kind, path in datasets:
        try:
            for item in read_dataset(kind, path):
                if isinstance(item, EpisodeError):
                    failures.append({"path": path, "error": str(item)})
                    continue
                try:
                    rows.append(episode_row(item, digests))
                except (OSError, ValueError) as e:
                    failures.append({"path": item.name, "error": f"{type(e).__name__}: {e}"})
                    continue
                held += sum(v.nbytes for v in rows[-1].values() if isinstance(v, np.ndarray))
                if len(rows) >= BATCH_ROWS or held >= BATCH_BYTES:
                    flush()
        except (OSError, ValueError, KeyError) as e:  # the dataset's own index is unreadable:
            # its episodes so far are kept, and the other datasets of the command go on
            failures.append({"path": path, "error": f"{path}: {type(e).__name__}: {e}"})
    flush()  # also when nothing is left: the table exists after an ingest
    added, present, fragments = totals
    for f in failures:
        log.warning("episode not ingested: %s", f["error"])
    return {
        "added": added,
        "present": present,
        "fragments": fragments,
        "failed": len(failures),
        "failures": failures,
    }


def _write(lake, rows: list[dict]) -> tuple[int, int, int]:
    """Append the rows not yet present; returns (added, present, fragments written).

    Only ingest-owned columns are written: a stage's column left out of a fragment's data files
    is what makes the coordinator judge that fragment still to compute for the stage."""
    import lance

    from sila.schema import sources_schema

    extra = owned(EPISODE_FIELDS, INGEST, "1")
    if not lake.has_table("sources"):
        base = sources_schema()
        lake.create_table(
            "sources", pa.schema([*base, *[f for f in extra if f.name not in base.names]])
        )
    ds = lake.table("sources")
    missing = [f for f in extra if f.name not in ds.schema.names]
    if missing:
        ds.add_columns(missing)
        ds = lake.table("sources")
    have = set(ds.to_table(columns=["id"], filter="media_kind = 'episode'")["id"].to_pylist())
    new = [r for r in rows if r["id"] not in have]
    if not new:
        return 0, len(rows), 0
    from sila.schema import BLOB_META, is_blob, owner

    fields, arrays = [], []
    for f in ds.schema:
        if owner(f) not in (None, INGEST):  # a stage's column: left out, so that stage
            continue  # finds the appended rows still to compute
        if is_blob(f):  # episodes are stored by reference: no bytes in the lake
            meta = {**(f.metadata or {}), **BLOB_META}
            fields.append(pa.field(f.name, pa.large_binary(), True, metadata=meta))
            arrays.append(pa.nulls(len(new), pa.large_binary()))
        else:
            fields.append(f)
            arrays.append(nested_array([r.get(f.name) for r in new], f))
    tbl = pa.table(arrays, schema=pa.schema(fields))
    before = len(ds.get_fragments())
    lance.write_dataset(
        tbl,
        ds.uri,
        mode="append",
        max_rows_per_file=64,
        storage_options=lake.storage_options or None,
    )
    return len(new), len(rows) - len(new), len(lake.table("sources").get_fragments()) - before


def ingest_with_episodes(lake, paths: list[str], **options):
    """`sila ingest`: episode datasets (LeRobot, generic layout) go through this module, every
    other path through the media ingest; one report for both."""
    from sila.ingest.run import IngestReport, ingest

    datasets, rest = find_datasets(paths)
    report = ingest(lake, rest, **options) if rest or not datasets else IngestReport()
    if datasets:
        ep = ingest_episodes(lake, datasets)
        report.added += ep["added"]
        report.present += ep["present"]
        report.fragments += ep["fragments"]
        report.failed += ep["failed"]
        report.failures += [
            {"id": None, "path": f["path"], "error": f["error"], "origin": "episode"}
            for f in ep["failures"]
        ]
    return report
