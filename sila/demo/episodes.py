"""Small episode datasets with known truth: SILA's generic layout and LeRobot v2 / v3.

The demo ingests them beside its media; the tests check the actions they yield against the
motions written here (the head yaws 1 degree and moves 1 cm per frame; the robot's end
effector yaws 2 degrees per frame and closes its gripper half-way)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sila.episodes.se3 import make_pose


def rz(theta: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    z, o = np.zeros_like(theta), np.ones_like(theta)
    return np.stack(
        [np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2
    )


def video(path: Path, frames: int, fps: int = 10, size: str = "64x48") -> Path:
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate={fps}",
            "-frames:v",
            str(frames),
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-g",
            "10",
            str(path),
        ],
        check=True,
    )
    return path


def ego_motion(n: int, step_m: float = 0.01, step_deg: float = 1.0) -> np.ndarray:
    """Camera moving `step_m` along its own x and yawing `step_deg` per frame."""
    theta = np.deg2rad(step_deg) * np.arange(n)
    poses = [np.eye(4)]
    d = make_pose(rz(np.array(np.deg2rad(step_deg))), np.array([step_m, 0.0, 0.0]))
    for _ in range(n - 1):
        poses.append(poses[-1] @ d)
    del theta
    return np.stack(poses)


def generic_dataset(
    root: Path,
    episodes: int = 2,
    frames: int = 45,
    fps: int = 10,
    late_start_s: float | None = None,
) -> Path:
    """Egocentric episodes: head moves (known), wrists hold still for the first 10 frames."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sila_episodes.json").write_text(
        json.dumps({"format": "sila-episodes/1", "embodiment": "egocentric"})
    )
    for e in range(episodes):
        d = root / f"ep{e:02d}"
        video(d / "head.mp4", frames, fps)
        t = np.arange(frames) / fps
        ego = ego_motion(frames)
        wrist = np.repeat(np.eye(4)[None], frames, 0)
        wrist[10:, 0, 3] = 0.002 * np.arange(frames - 10)
        hands = np.random.default_rng(e).normal(size=(frames, 2, 21, 3)) * 0.01
        hands[:, :, :, :] += wrist[:, None, None, :3, 3]
        t_hands = t * 1.0
        if late_start_s is not None and e == episodes - 1:
            t_hands = t + late_start_s  # the hand tracker started late: must be refused
        np.savez(
            d / "streams.npz",
            t=t,
            ego=ego,
            left_wrist=wrist,
            right_wrist=wrist,
            hands=hands,
            t_hands=t_hands,
            imu=np.zeros((frames * 2, 6)),
            t_imu=np.arange(frames * 2) / (2 * fps),
        )
        (d / "episode.json").write_text(
            json.dumps(
                {
                    "session_id": f"s{e // 2}",
                    "language": [f"pick up cup {e}"],
                    "cameras": {"head": "head.mp4"},
                    "intrinsics": {"head": [50, 50, 32, 24]},
                }
            )
        )
    return root


def _robot_state(n: int, offset: int = 0) -> list[list[float]]:
    rows = []
    for i in range(n):
        yaw = np.deg2rad(2.0) * i
        rows.append(
            [
                0.01 * i,
                0.0,
                0.5,
                0.0,
                0.0,
                float(np.sin(yaw / 2)),
                float(np.cos(yaw / 2)),
                1.0 if i + offset >= n // 2 else 0.0,
            ]
        )
    return rows


INFO_FEATURES = {
    "observation.state": {
        "dtype": "float32",
        "shape": [8],
        "names": ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper"],
    },
    "observation.images.top": {"dtype": "video", "shape": [48, 64, 3]},
    "timestamp": {"dtype": "float32", "shape": [1]},
}


def lerobot_v2(root: Path, episodes: int = 2, frames: int = 30, fps: int = 10) -> Path:
    (root / "meta").mkdir(parents=True, exist_ok=True)
    info = {
        "codebase_version": "v2.1",
        "robot_type": "so100",
        "fps": fps,
        "chunks_size": 1000,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": INFO_FEATURES,
        "total_episodes": episodes,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    lines = []
    for e in range(episodes):
        t = pa.table(
            {
                "timestamp": (np.arange(frames) / fps).astype(np.float32),
                "frame_index": np.arange(frames),
                "episode_index": [e] * frames,
                "observation.state": _robot_state(frames),
            }
        )
        p = root / f"data/chunk-000/episode_{e:06d}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, p)
        video(root / f"videos/chunk-000/observation.images.top/episode_{e:06d}.mp4", frames, fps)
        lines.append(
            json.dumps({"episode_index": e, "tasks": ["stack the blocks"], "length": frames})
        )
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    return root


def lerobot_v3(
    root: Path,
    episodes: int = 2,
    frames: int = 30,
    fps: int = 10,
    wrist_lead_s: float | None = None,
) -> Path:
    """Episodes packed into one parquet and one mp4 (v3.0). With `wrist_lead_s`, a second
    camera ("wrist") whose packed file starts `wrist_lead_s` earlier than the top camera's, so
    every episode has its own, different `from_timestamp` in each camera file."""
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so100",
        "fps": fps,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": dict(INFO_FEATURES),
    }
    if wrist_lead_s is not None:
        info["features"]["observation.images.wrist"] = INFO_FEATURES["observation.images.top"]
    (root / "meta" / "info.json").write_text(json.dumps(info))
    n = episodes * frames
    t = pa.table(
        {
            "timestamp": np.concatenate([np.arange(frames) / fps] * episodes).astype(np.float32),
            "frame_index": np.concatenate([np.arange(frames)] * episodes),
            "episode_index": np.repeat(np.arange(episodes), frames),
            "observation.state": sum((_robot_state(frames) for _ in range(episodes)), []),
        }
    )
    p = root / "data/chunk-000/file-000.parquet"
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, p)
    video(root / "videos/observation.images.top/chunk-000/file-000.mp4", n, fps)
    lead = round((wrist_lead_s or 0.0) * fps)
    if wrist_lead_s is not None:
        video(root / "videos/observation.images.wrist/chunk-000/file-000.mp4", n + lead, fps)
    rows = [
        {
            "episode_index": e,
            "tasks": ["stack the blocks"],
            "length": frames,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": e * frames,
            "dataset_to_index": (e + 1) * frames,
            "videos/observation.images.top/chunk_index": 0,
            "videos/observation.images.top/file_index": 0,
            "videos/observation.images.top/from_timestamp": e * frames / fps,
            "videos/observation.images.top/to_timestamp": (e + 1) * frames / fps,
            **(
                {
                    "videos/observation.images.wrist/chunk_index": 0,
                    "videos/observation.images.wrist/file_index": 0,
                    "videos/observation.images.wrist/from_timestamp": (lead + e * frames) / fps,
                    "videos/observation.images.wrist/to_timestamp": (lead + (e + 1) * frames) / fps,
                }
                if wrist_lead_s is not None
                else {}
            ),
        }
        for e in range(episodes)
    ]
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    return root
