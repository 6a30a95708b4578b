"""Episodes: synchronized video, poses, hands, gripper, IMU and language, one `sources` row each.

Two layouts are read (docs/episodes.md): LeRobot datasets (v2 and v3, `sila.episodes.lerobot`) and
SILA's generic layout: a folder with `sila_episodes.json`, one sub-folder per episode holding
`episode.json` (cameras, language, embodiment, intrinsics) and `streams.npz` (timestamps and
arrays per stream). Every stream is checked against the primary camera's clock (tolerance: half
a frame of the slowest stream) and resampled onto it; a stream that starts late, ends early or
runs backwards makes the episode an error row that states the offset, never a silent shift.
Episodes are stored by reference: the video stays where it is, `video_offset_s` says where the
episode starts in it (LeRobot v3 packs many episodes into one file).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from sila.episodes.se3 import resample_poses, resample_values
from sila.errors import SilaError

log = logging.getLogger(__name__)

MARKER = "sila_episodes.json"
POSE_STREAMS = ("ego", "left_wrist", "right_wrist", "ee")
FINGERTIPS = (4, 8, 12, 16, 20)  # thumb..little tips of the 21-keypoint hand (MANO order)
EMBODIMENTS = ("camera", "vehicle", "egocentric", "robot")

POSE = pa.list_(pa.list_(pa.float32()))  # per frame a flattened 4x4 (16)
EPISODE_FIELDS: list[pa.Field] = [
    pa.field("embodiment", pa.string()),
    pa.field("episode_index", pa.int64()),
    pa.field("session_id", pa.string()),
    pa.field("episode_success", pa.bool_()),
    pa.field("language", pa.list_(pa.string())),
    pa.field("cameras", pa.list_(pa.string())),
    pa.field("camera_uris", pa.list_(pa.string())),
    pa.field("camera_layout", pa.string()),
    pa.field("video_offset_s", pa.float64()),
    pa.field("camera_offsets_s", pa.list_(pa.float64())),  # per camera, as `camera_uris`
    pa.field("episode_fps", pa.float64()),
    pa.field("episode_frames", pa.int64()),
    pa.field("traj_ego", POSE),
    pa.field("traj_left_wrist", POSE),
    pa.field("traj_right_wrist", POSE),
    pa.field("traj_ee", POSE),
    pa.field("traj_left_fingers", pa.list_(pa.list_(pa.float32()))),  # 5 tips x xyz
    pa.field("traj_right_fingers", pa.list_(pa.list_(pa.float32()))),
    pa.field("traj_gripper", pa.list_(pa.float32())),
    pa.field("traj_imu", pa.list_(pa.list_(pa.float32()))),  # acc xyz, gyro xyz
    pa.field("intrinsics", pa.list_(pa.float32(), 4)),
    pa.field("episode_meta", pa.string()),
]


class EpisodeError(SilaError):
    """One episode cannot be used as it is (the message says why and by how much)."""


@dataclass
class Episode:
    """One episode, every stream on the primary camera's clock (frame i at i / fps)."""

    name: str  # the user's path (or dataset + index) for messages
    video: str  # primary camera file
    fps: float
    frames: int
    embodiment: str
    video_offset_s: float = 0.0
    width: int | None = None
    height: int | None = None
    index: int | None = None
    session_id: str | None = None
    success: bool | None = None
    language: list[str] = field(default_factory=list)
    cameras: dict[str, str] = field(default_factory=dict)  # name -> file (primary first)
    camera_offsets: dict[str, float] = field(default_factory=dict)  # name -> start in its file (s)
    poses: dict[str, np.ndarray] = field(default_factory=dict)  # stream -> (frames, 4, 4)
    fingers: dict[str, np.ndarray] = field(default_factory=dict)  # left/right -> (frames, 5, 3)
    gripper: np.ndarray | None = None  # (frames,)
    imu: np.ndarray | None = None  # (frames, 6)
    intrinsics: list[float] | None = None
    meta: dict = field(default_factory=dict)


def clock(frames: int, fps: float) -> np.ndarray:
    return np.arange(frames, dtype=np.float64) / fps


def check_alignment(name: str, t_clock: np.ndarray, streams: dict[str, np.ndarray]) -> float:
    """Refuse streams that do not cover the clock within half a frame of the slowest stream.

    Returns the tolerance used. Raises EpisodeError naming the stream and its offset."""
    rates = [1.0 / np.median(np.diff(t_clock))] if len(t_clock) > 1 else []
    for s, t in streams.items():
        t = np.asarray(t, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(t))
        if len(bad):
            raise EpisodeError(
                f"{name}: stream '{s}' has {len(bad)} non-finite timestamp(s), first at sample "
                f"{int(bad[0])}"
            )
        if len(t) < 2:
            raise EpisodeError(f"{name}: stream '{s}' has {len(t)} sample(s); need at least 2")
        d = np.diff(t)
        if np.any(d <= 0):
            i = int(np.argmax(d <= 0))
            raise EpisodeError(f"{name}: stream '{s}' timestamps go backwards at sample {i + 1}")
        rates.append(1.0 / float(np.median(d)))
    tol = 0.5 / min(rates) if rates else 0.0
    for s, t in streams.items():
        start = float(t[0] - t_clock[0])
        end = float(t_clock[-1] - t[-1])
        if start > tol + 1e-9:
            raise EpisodeError(
                f"{name}: stream '{s}' starts {start:.3f} s after the video (tolerance {tol:.3f} s)"
            )
        if end > tol + 1e-9:
            raise EpisodeError(
                f"{name}: stream '{s}' ends {end:.3f} s before the video (tolerance {tol:.3f} s)"
            )
    return tol


def require_finite(name: str, stream: str, values: np.ndarray) -> None:
    """A NaN or infinite sample makes the episode an error: one bad value would otherwise reach
    every window's actions and, through a fit, every normalised action of the dataset."""
    v = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(v.reshape(len(v), -1)).all(axis=1) if v.ndim else ~np.isfinite(v)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise EpisodeError(
            f"{name}: stream '{stream}' has {int(np.sum(bad))} non-finite sample(s), first at "
            f"sample {i}"
        )


# Rotations further than this from orthonormal (max |R^T R - I|, or |det - 1|) are refused; closer
# ones are the rounding of a stored pose and are projected onto SO(3), counted on the episode.
ROTATION_TOLERANCE = 1e-2


def checked_rotations(ep: Episode, stream: str, r: np.ndarray) -> np.ndarray:
    """`r` (N, 3, 3) projected onto SO(3) when every matrix is within ROTATION_TOLERANCE of a
    rotation; the number repaired is recorded in `ep.meta["repaired"]`. Raises EpisodeError
    naming the stream and sample otherwise."""
    err = np.abs(np.swapaxes(r, 1, 2) @ r - np.eye(3)).max(axis=(1, 2))
    err = np.maximum(err, np.abs(np.linalg.det(r) - 1.0))
    if np.any(err > ROTATION_TOLERANCE):
        i = int(np.argmax(err > ROTATION_TOLERANCE))
        raise EpisodeError(
            f"{ep.name}: stream '{stream}' sample {i} is not a rotation (error {err[i]:.3g}, "
            f"tolerance {ROTATION_TOLERANCE:g}); {int(np.sum(err > ROTATION_TOLERANCE))} such"
        )
    fixed = int(np.sum(err > 1e-6))
    if fixed:
        ep.meta.setdefault("repaired", {})[stream] = fixed
        log.info("%s: %d rotation(s) of '%s' projected onto SO(3)", ep.name, fixed, stream)
    u, _, vt = np.linalg.svd(r)
    return u @ vt


def fingertips_in_wrist(hand: np.ndarray, wrist: np.ndarray | None) -> np.ndarray:
    """(N, 21, 3) world keypoints -> (N, 5, 3) fingertips in the wrist frame."""
    tips = hand[:, FINGERTIPS, :]
    if wrist is None:  # keypoint 0 is the wrist; axes stay the world's
        return tips - hand[:, :1, :]
    inv = np.linalg.inv(wrist)
    homo = np.concatenate([tips, np.ones(tips.shape[:2] + (1,))], axis=-1)
    return np.einsum("nij,nkj->nki", inv, homo)[..., :3]


def probe_video(path: str) -> tuple[float, int, int, int]:
    """(fps, frames, width, height) of a video file's default video stream."""
    import av

    try:
        with av.open(path) as c:
            v = c.streams.video[0]
            fps = float(v.average_rate or v.base_rate or 0)
            frames = v.frames or 0
            if not frames and v.duration and v.time_base:
                frames = round(float(v.duration * v.time_base) * fps)
            if not frames and c.duration:
                frames = round(c.duration / 1e6 * fps)
            return fps, int(frames), v.codec_context.width, v.codec_context.height
    except (OSError, IndexError, av.error.FFmpegError) as e:
        raise EpisodeError(f"video {path}: cannot be read ({e})") from e


def read_generic(folder: Path, defaults: dict) -> Episode:
    """One episode of the generic layout (docs/episodes.md)."""
    spec_path = folder / "episode.json"
    try:
        spec = {**defaults, **json.loads(spec_path.read_text())}
    except (OSError, ValueError) as e:
        raise EpisodeError(f"{spec_path}: not readable JSON ({e})") from e
    cams = spec.get("cameras") or {}
    if not cams:
        raise EpisodeError(f"{spec_path}: names no cameras")
    primary = spec.get("primary_camera") or next(iter(cams))
    ordered = {primary: cams[primary], **{k: v for k, v in cams.items() if k != primary}}
    files = {k: str((folder / v).resolve()) for k, v in ordered.items()}
    for k, v in files.items():
        if not Path(v).resolve().is_relative_to(folder.resolve()):
            raise EpisodeError(f"{spec_path}: camera '{k}' leads outside the episode folder")
        if not os.path.isfile(v):
            raise EpisodeError(f"{spec_path}: camera '{k}' file {v} is missing")
    fps, frames, w, h = probe_video(files[primary])
    if not fps or frames < 2:
        raise EpisodeError(f"{files[primary]}: no usable frame rate or too few frames")
    emb = spec.get("embodiment", "camera")
    if emb not in EMBODIMENTS:
        raise EpisodeError(f"{spec_path}: embodiment {emb!r} is not one of {EMBODIMENTS}")
    ep = Episode(
        str(folder),
        files[primary],
        fps,
        frames,
        emb,
        0.0,
        w,
        h,
        spec.get("index"),
        spec.get("session_id"),
        spec.get("success"),
        list(spec.get("language") or []),
        files,
        intrinsics=(spec.get("intrinsics") or {}).get(primary),
        meta=spec.get("extra") or {},
    )
    npz = folder / "streams.npz"
    if npz.is_file():
        attach_streams(ep, dict(np.load(npz)), str(npz))
    return ep


def attach_streams(ep: Episode, data: dict[str, np.ndarray], where: str) -> None:
    """Check `data`'s streams against the episode clock and resample them onto it."""
    t_clock = clock(ep.frames, ep.fps)

    def t_of(s: str) -> np.ndarray:
        t = data.get(f"t_{s}", data.get("t"))
        if t is None:
            raise EpisodeError(f"{where}: stream '{s}' has no timestamps (t or t_{s})")
        return np.asarray(t, dtype=np.float64)

    present = [s for s in (*POSE_STREAMS, "gripper", "hands", "imu") if s in data]
    check_alignment(ep.name, t_clock, {s: t_of(s) for s in present})
    for s in present:
        require_finite(ep.name, s, data[s])
    for s in POSE_STREAMS:
        if s in data:
            p = np.asarray(data[s], dtype=np.float64)
            if p.ndim != 3 or p.shape[1:] != (4, 4):
                raise EpisodeError(f"{where}: stream '{s}' must be (N, 4, 4) poses, got {p.shape}")
            p[:, :3, :3] = checked_rotations(ep, s, p[:, :3, :3])
            ep.poses[s] = resample_poses(t_of(s), p, t_clock)
    if "gripper" in data:
        ep.gripper = resample_values(
            t_of("gripper"), np.asarray(data["gripper"]).reshape(-1), t_clock
        )
    if "imu" in data:
        ep.imu = resample_values(t_of("imu"), np.asarray(data["imu"])[:, :6], t_clock)
    if "hands" in data:
        hands = resample_values(t_of("hands"), np.asarray(data["hands"]), t_clock)  # (N, 2, 21, 3)
        for i, side in enumerate(("left", "right")):
            ep.fingers[side] = fingertips_in_wrist(hands[:, i], ep.poses.get(f"{side}_wrist"))


def find_datasets(paths: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Split ingest arguments into episode datasets ((kind, path)) and everything else."""
    datasets, rest = [], []
    for p in paths:
        q = Path(p)
        if q.is_dir() and (q / "meta" / "info.json").is_file():
            datasets.append(("lerobot", p))
        elif q.is_dir() and (q / MARKER).is_file():
            datasets.append(("generic", p))
        else:
            rest.append(p)
    return datasets, rest


def read_dataset(kind: str, path: str):
    """Yield Episode or EpisodeError per episode of a dataset."""
    if kind == "lerobot":
        from sila.episodes.lerobot import read_lerobot

        yield from read_lerobot(Path(path))
        return
    root = Path(path)
    try:
        defaults = json.loads((root / MARKER).read_text())
    except ValueError as e:
        yield EpisodeError(f"{root / MARKER}: not valid JSON ({e})")
        return
    for i, sub in enumerate(
        sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    ):
        try:
            yield read_generic(
                sub, {"index": i, **{k: v for k, v in defaults.items() if k != "format"}}
            )
        except EpisodeError as e:
            yield e
        except (ValueError, IndexError, KeyError, TypeError) as e:  # a malformed stream file
            yield EpisodeError(f"{sub}: {type(e).__name__}: {e}")
