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


def _poses(a: np.ndarray | None) -> list | None:
    return None if a is None else a.reshape(len(a), 16).astype(np.float32).tolist()


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
        "traj_left_fingers": None
        if "left" not in ep.fingers
        else ep.fingers["left"].reshape(ep.frames, 15).astype(np.float32).tolist(),
        "traj_right_fingers": None
        if "right" not in ep.fingers
        else ep.fingers["right"].reshape(ep.frames, 15).astype(np.float32).tolist(),
        "traj_gripper": None if ep.gripper is None else ep.gripper.astype(np.float32).tolist(),
        "traj_imu": None if ep.imu is None else ep.imu.astype(np.float32).tolist(),
        "intrinsics": ep.intrinsics,
        "episode_meta": json.dumps(ep.meta, default=str),
    }


def ingest_episodes(lake, datasets: list[tuple[str, str]]) -> dict:
    """Add the episodes of `datasets` to `sources`; returns {added, present, fragments, failed,
    failures}. A bad episode is a failure naming it; the others are written."""
    rows, failures = [], []
    digests: dict[str, str] = {}
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
        except (OSError, ValueError, KeyError) as e:  # the dataset's own index is unreadable:
            # its episodes so far are kept, and the other datasets of the command go on
            failures.append({"path": path, "error": f"{path}: {type(e).__name__}: {e}"})
    added, present, fragments = _write(lake, rows)
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
            arrays.append(pa.array([r.get(f.name) for r in new], type=f.type))
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
