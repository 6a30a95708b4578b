"""LeRobot datasets (v2.x and v3.0 layouts) read from their documented format with pyarrow and
PyAV (the `lerobot` package pins an older torch than ours).

v2: one parquet and one mp4 per camera per episode (`data_path` / `video_path` templates in
`meta/info.json`, episodes in `meta/episodes.jsonl`). v3: many episodes per parquet and per mp4;
`meta/episodes/*/*.parquet` gives each episode's rows (`dataset_from_index`..`dataset_to_index`)
and its time range in every camera file (`videos/<key>/from_timestamp`).

Robot state maps to the unified action parts by feature names: an end-effector pose from
`x, y, z` plus `qx, qy, qz, qw` or `roll, pitch, yaw`; a gripper from a name containing
"gripper". Joint-space-only state carries no pose (the actions mask says so).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sila.episodes.layout import (
    Episode,
    EpisodeError,
    check_alignment,
    checked_rotations,
    clock,
    probe_video,
    require_finite,
)
from sila.episodes.se3 import euler_to_rot, make_pose, quat_to_rot


def _names(feature: dict) -> list[str]:
    n = feature.get("names")
    if isinstance(n, dict):
        n = next(iter(n.values()), [])
    return [str(x).lower() for x in (n or [])]


def state_parts(info: dict) -> dict:
    """Which feature/indices hold the end-effector pose and the gripper."""
    feats = info.get("features", {})
    for key, f in feats.items():
        if not key.startswith("observation.state"):
            continue
        names = _names(f)
        idx = {n: i for i, n in enumerate(names)}
        grip = [i for i, n in enumerate(names) if "gripper" in n]
        if {"x", "y", "z"} <= set(idx):
            xyz = [idx["x"], idx["y"], idx["z"]]
            if {"qx", "qy", "qz", "qw"} <= set(idx):
                return {
                    "key": key,
                    "xyz": xyz,
                    "quat": [idx[k] for k in ("qx", "qy", "qz", "qw")],
                    "gripper": grip[:1],
                }
            if {"roll", "pitch", "yaw"} <= set(idx):
                return {
                    "key": key,
                    "xyz": xyz,
                    "rpy": [idx[k] for k in ("roll", "pitch", "yaw")],
                    "gripper": grip[:1],
                }
        if grip:
            return {"key": key, "gripper": grip[:1]}
    return {}


def _episode_from_frames(
    root: Path,
    info: dict,
    ep_index: int,
    frames,
    videos: dict[str, tuple[str, float]],
    tasks: list[str],
    parts: dict,
) -> Episode:
    fps = float(info["fps"])
    keys = list(videos)
    if not keys:
        raise EpisodeError(f"{root}: episode {ep_index} has no camera video")
    primary = keys[0]
    path, offset = videos[primary]
    name = f"{root} episode {ep_index}"
    n = frames.num_rows
    if n < 2:
        raise EpisodeError(f"{name}: {n} frame(s) in its data file; need at least 2")
    vfps, vframes, w, h = probe_video(path)
    if abs(vfps - fps) > 0.01 * fps:
        raise EpisodeError(f"{name}: video {path} runs at {vfps:g} fps, info.json says {fps:g}")
    ts = np.asarray(frames.column("timestamp").to_numpy(zero_copy_only=False), dtype=np.float64)
    t_clock = clock(n, fps)
    # `timestamp` is the state's time on the episode's clock (0 at its first video frame):
    # checked as it is, like every stream of the generic layout, so a late stream is refused
    check_alignment(name, t_clock, {"timestamp": ts})
    drift = float(np.max(np.abs(ts - t_clock)))
    if drift > 0.5 / fps:
        raise EpisodeError(f"{name}: frame timestamps drift {drift:.3f} s from {fps:g} fps")
    for key, (file, start) in videos.items():  # every camera holds the episode's time range
        cfps, cframes = (vfps, vframes) if key == primary else probe_video(file)[:2]
        end, have = start + n / fps, cframes / cfps if cfps else 0.0
        if end > have + 0.5 / fps:
            raise EpisodeError(f"{name}: needs video up to {end:.3f} s, {file} has {have:.3f} s")
    ep = Episode(
        name,
        path,
        fps,
        n,
        "robot",
        offset,
        w,
        h,
        ep_index,
        None,
        None,
        tasks,
        {k.removeprefix("observation.images."): v[0] for k, v in videos.items()},
        camera_offsets={k.removeprefix("observation.images."): v[1] for k, v in videos.items()},
        meta={
            "robot_type": info.get("robot_type"),
            "codebase_version": info.get("codebase_version"),
        },
    )
    if parts:
        state = np.asarray(frames.column(parts["key"]).to_pylist(), dtype=np.float64)
        used = [i for k in ("xyz", "quat", "rpy", "gripper") for i in parts.get(k, [])]
        require_finite(name, parts["key"], state[:, used])
        if "xyz" in parts:
            rot = (
                _unit_quat_rot(ep, parts["key"], state[:, parts["quat"]])
                if "quat" in parts
                else euler_to_rot(state[:, parts["rpy"]])
            )
            ep.poses["ee"] = make_pose(rot, state[:, parts["xyz"]])
        if parts.get("gripper"):
            ep.gripper = state[:, parts["gripper"][0]]
    return ep


# A quaternion whose norm is off by more than this is not a rounding of a unit quaternion.
QUAT_NORM_TOLERANCE = 1e-2


def _unit_quat_rot(ep: Episode, stream: str, q: np.ndarray) -> np.ndarray:
    """Rotations of (x, y, z, w) quaternions: a zero or far-from-unit quaternion makes the
    episode an error; near-unit ones are normalised and counted in `ep.meta["repaired"]`."""
    norm = np.linalg.norm(q, axis=-1)
    off = np.abs(norm - 1.0)
    if np.any(off > QUAT_NORM_TOLERANCE):
        i = int(np.argmax(off > QUAT_NORM_TOLERANCE))
        raise EpisodeError(
            f"{ep.name}: stream '{stream}' quaternion at sample {i} has norm {norm[i]:.3g} (a unit "
            f"quaternion within {QUAT_NORM_TOLERANCE:g} is required)"
        )
    fixed = int(np.sum(off > 1e-6))
    if fixed:
        ep.meta.setdefault("repaired", {})[f"{stream} quaternion"] = fixed
    return checked_rotations(ep, stream, quat_to_rot(q))


def read_lerobot(root: Path) -> Iterator[Episode | EpisodeError]:
    """Yield Episode or EpisodeError per episode of the LeRobot dataset at `root`; every path
    stored is absolute, so stages find the files from any working directory."""
    root = root.resolve()
    try:
        info = json.loads((root / "meta" / "info.json").read_text())
        version = str(info.get("codebase_version", "v2.0"))
    except (OSError, ValueError) as e:
        yield EpisodeError(f"{root}/meta/info.json: not readable ({e})")
        return
    video_keys = [k for k, f in info.get("features", {}).items() if f.get("dtype") == "video"]
    parts = state_parts(info)
    if version.startswith("v3"):
        yield from _read_v3(root, info, video_keys, parts)
    else:
        yield from _read_v2(root, info, video_keys, parts)


def _read_v2(root, info, video_keys, parts):
    chunk_size = int(info.get("chunks_size", 1000))
    eps_file = root / "meta" / "episodes.jsonl"
    try:
        episodes = [json.loads(line) for line in eps_file.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        yield EpisodeError(f"{eps_file}: not readable JSON lines ({e})")
        return
    for e in episodes:
        i = int(e["episode_index"])
        chunk = i // chunk_size
        try:
            data = root / info["data_path"].format(episode_chunk=chunk, episode_index=i)
            frames = pq.read_table(data)
            videos = {
                k: (
                    str(
                        root
                        / info["video_path"].format(
                            episode_chunk=chunk, video_key=k, episode_index=i
                        )
                    ),
                    0.0,
                )
                for k in video_keys
            }
            missing = [v for v, _ in videos.values() if not Path(v).is_file()]
            if missing:
                raise EpisodeError(f"{root} episode {i}: video file {missing[0]} is missing")
            yield _episode_from_frames(
                root, info, i, frames, videos, list(e.get("tasks", [])), parts
            )
        except EpisodeError as err:
            yield err
        except (OSError, KeyError, ValueError, IndexError, TypeError) as err:
            yield EpisodeError(f"{root} episode {i}: {type(err).__name__}: {err}")


def _read_v3(root, info, video_keys, parts):
    meta_files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
    if not meta_files:
        yield EpisodeError(f"{root}: v3 dataset without meta/episodes/*.parquet")
        return
    cache: dict[str, object] = {}
    for mf in meta_files:
        for e in pq.read_table(mf).to_pylist():
            i = int(e["episode_index"])
            try:
                data = str(
                    root
                    / info["data_path"].format(
                        chunk_index=e["data/chunk_index"], file_index=e["data/file_index"]
                    )
                )
                if data not in cache:
                    cache = {data: pq.read_table(data)}  # one data file in memory at a time
                tbl = cache[data]
                frames = tbl.filter(pc.equal(tbl["episode_index"], i))
                if frames.num_rows != int(e["dataset_to_index"]) - int(e["dataset_from_index"]):
                    raise EpisodeError(
                        f"{root} episode {i}: {frames.num_rows} frames in {data}, meta says "
                        f"{int(e['dataset_to_index']) - int(e['dataset_from_index'])}"
                    )
                videos = {}
                for k in video_keys:
                    path = root / info["video_path"].format(
                        video_key=k,
                        chunk_index=e[f"videos/{k}/chunk_index"],
                        file_index=e[f"videos/{k}/file_index"],
                    )
                    if not path.is_file():
                        raise EpisodeError(f"{root} episode {i}: video file {path} is missing")
                    videos[k] = (str(path), float(e.get(f"videos/{k}/from_timestamp") or 0.0))
                yield _episode_from_frames(
                    root, info, i, frames, videos, list(e.get("tasks") or []), parts
                )
            except EpisodeError as err:
                yield err
            except (OSError, KeyError, ValueError, IndexError, TypeError) as err:
                yield EpisodeError(f"{root} episode {i}: {type(err).__name__}: {err}")
