"""`actions`: pseudo-actions of every window in ONE superset layout (shared/ACTIONS.md).

Per step t of a window (frames start..end-1 of the episode clock), the action is the change
from state t-1 to t: ΔT_t = T_{t-1}^{-1} T_t of each pose part as translation + 6D rotation;
grasp parts are current values. The window's first action uses the frame before the window
when there is one, so every window has as many actions as frames (else one fewer).

Layout (ACTION_LAYOUT, also in the column metadata): ego 9 | left_wrist 9 | right_wrist 9 |
ee 9 | left_fingers 15 | right_fingers 15 | gripper 1 = 67 floats. Parts an embodiment does not
have are zeros with `action_mask` false: camera/vehicle = ego; egocentric = ego (head) + both
wrists + fingertips; robot = ego (head camera) + ee + gripper. Idle steps (no part moved more
than the thresholds) are kept and counted.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from sila.episodes.se3 import pose_to_9d, relative, rotation_angle
from sila.errors import RowError
from sila.stage import Lookup, Stage

ACTION_LAYOUT = [
    ("ego", 9),
    ("left_wrist", 9),
    ("right_wrist", 9),
    ("ee", 9),
    ("left_fingers", 15),
    ("right_fingers", 15),
    ("gripper", 1),
]
ACTION_DIM = sum(n for _, n in ACTION_LAYOUT)
OFFSETS = {}
_o = 0
for _name, _n in ACTION_LAYOUT:
    OFFSETS[_name] = (_o, _o + _n)
    _o += _n
POSE_PARTS = ("ego", "left_wrist", "right_wrist", "ee")
_PART = {n: i for i, (n, _) in enumerate(ACTION_LAYOUT)}  # index in `action_mask`
TRAJ_COLUMNS = tuple(f"traj_{n}" for n, _ in ACTION_LAYOUT)  # columns of `sources` (episodes)
COMPOSITION = {  # the parts each embodiment is expected to carry
    "camera": ("ego",),
    "vehicle": ("ego",),
    "egocentric": ("ego", "left_wrist", "right_wrist", "left_fingers", "right_fingers"),
    "robot": ("ego", "ee", "gripper"),
}
LAYOUT_META = json.dumps(
    {
        "layout": ACTION_LAYOUT,
        "pose": "translation(3) + rot6d(6), OpenCV axes",
        "composition": COMPOSITION,
        "mask_order": [n for n, _ in ACTION_LAYOUT],
    }
)


def window_actions(
    traj: dict[str, np.ndarray | None],
    start: int,
    end: int,
    embodiment: str,
    idle_translation: float,
    idle_rotation: float,
    idle_grasp: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(actions (T, ACTION_DIM), mask (parts,), idle step count) for frames [start, end)."""
    lo = max(0, start - 1)
    steps = end - lo - 1
    out = np.zeros((max(0, steps), ACTION_DIM), dtype=np.float32)
    moving = np.zeros(max(0, steps), dtype=bool)
    allowed = set(COMPOSITION.get(embodiment, tuple(n for n, _ in ACTION_LAYOUT)))
    mask = np.zeros(len(ACTION_LAYOUT), dtype=bool)
    for i, (name, _) in enumerate(ACTION_LAYOUT):
        arr = traj.get(name)
        if arr is None or name not in allowed or steps <= 0:
            continue
        a, b = OFFSETS[name]
        if name in POSE_PARTS:
            poses = arr[lo:end].reshape(-1, 4, 4).astype(np.float64)
            d = relative(poses)
            out[:, a:b] = pose_to_9d(d)
            moving |= (np.linalg.norm(d[:, :3, 3], axis=1) > idle_translation) | (
                rotation_angle(d[:, :3, :3]) > idle_rotation
            )
        else:
            cur = arr[lo + 1 : end].reshape(steps, -1)
            out[:, a:b] = cur
            prev = arr[lo : end - 1].reshape(steps, -1)
            moving |= np.abs(cur - prev).max(axis=1) > idle_grasp
        mask[i] = True
    return out, mask, int((~moving).sum()) if mask.any() else 0


def _nested_to_numpy(arr: pa.Array, width: int) -> list[np.ndarray | None]:
    """list<list<float>> -> per row an (N, width) array, without Python lists."""
    out: list[np.ndarray | None] = []
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    flat = arr.flatten()  # one entry per frame
    values = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    offsets = arr.offsets.to_numpy()
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    base = flat.offsets.to_numpy()[0] if len(flat) else 0
    for r in range(len(arr)):
        if not valid[r]:
            out.append(None)
            continue
        a, b = offsets[r] - offsets[0], offsets[r + 1] - offsets[0]
        lo = flat.offsets[a].as_py() - base
        hi = flat.offsets[b].as_py() - base
        out.append(values[lo:hi].reshape(b - a, width))
    return out


def _per_episode(arr: pa.Array) -> tuple[list[int | None], pa.Array]:
    """(per row the index of its episode, one value per episode) of a looked-up column: the
    platform dictionary-encodes lookups, so an episode's trajectory is decoded once."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if isinstance(arr, pa.DictionaryArray):
        return arr.indices.to_pylist(), arr.dictionary
    return list(range(len(arr))), arr


def _trajectories(values: pa.Array, part: str) -> list[np.ndarray | None]:
    """One episode's stream of `part` per value: (frames, 16) poses, (frames, 15) fingertips
    or (frames, 1) grasp."""
    if part == "gripper":
        return [
            None if v is None else np.asarray(v, np.float32).reshape(-1, 1)
            for v in values.to_pylist()
        ]
    return _nested_to_numpy(values, 16 if part in POSE_PARTS else 15)


class Actions(Stage):
    """Unified pseudo-actions per window, with the mask of the parts present.

    The episode's embodiment and trajectories are a declared lookup of `sources` by the
    window's `source_id`: the platform supplies them per segment (each episode once), including
    episodes appended while the job runs."""

    name = "actions"
    table = "clips"
    inputs = ["source_id", "start_frame", "end_frame"]
    lookups = [Lookup("sources", ("embodiment", *TRAJ_COLUMNS), key="source_id")]
    outputs = [
        pa.field(
            "actions",
            pa.list_(pa.list_(pa.float32())),  # steps x ACTION_DIM
            metadata={"sila.layout": LAYOUT_META},
        ),
        pa.field("action_mask", pa.list_(pa.bool_())),  # one per ACTION_LAYOUT part
        pa.field("action_steps", pa.int32()),
        pa.field("action_idle_steps", pa.int32()),
        pa.field("embodiment", pa.string()),
        # false: the episode has a camera (ego) or end-effector pose for the window, so visual
        # odometry (`camera_motion`, gated on this column) has nothing to add
        pa.field("needs_odometry", pa.bool_()),
    ]
    version = "3"  # 3: needs_odometry
    segment_rows = 256
    settings = {"idle_translation": 1e-3, "idle_rotation": 1e-3, "idle_grasp": 1e-3}

    def compute(self, batch: pa.RecordBatch) -> dict[str, Any]:
        """Decode each episode of the segment once, then `process_row` per window."""
        rows, embodiments = _per_episode(batch.column("sources.embodiment"))
        emb = embodiments.to_pylist()
        streams: dict[str, tuple[list[int | None], list[np.ndarray | None]]] = {}
        for name, _ in ACTION_LAYOUT:
            idx, values = _per_episode(batch.column(f"sources.traj_{name}"))
            streams[name] = (idx, _trajectories(values, name))
        starts = batch.column("start_frame").to_pylist()
        ends = batch.column("end_frame").to_pylist()
        windows = []
        for r, ep in enumerate(rows):
            traj = {}
            for name, (idx, per) in streams.items():
                traj[name] = per[idx[r]] if idx[r] is not None else None
            embodiment = emb[ep] if ep is not None else None
            windows.append(
                {"embodiment": embodiment, "traj": traj, "start": starts[r], "end": ends[r]}
            )
        out = self.map_rows(windows)
        out["actions"] = _actions_array(out["actions"])
        return out

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """One window's actions; a plain video (no embodiment, no trajectories) gets nulls."""
        emb, traj, a, b = row["embodiment"], row["traj"], row["start"], row["end"]
        if emb is None:
            return {}
        frames = max((len(v) for v in traj.values() if v is not None), default=0)
        if frames and b > frames:
            raise RowError(f"window ends at frame {b}, the episode has {frames} frames")
        acts, mask, idle = window_actions(
            traj,
            a,
            b,
            emb,
            float(self.config["idle_translation"]),
            float(self.config["idle_rotation"]),
            float(self.config["idle_grasp"]),
        )
        finite = np.isfinite(np.asarray(acts, dtype=np.float64)).all(axis=0)
        if not finite.all():  # a NaN would poison every normaliser fitted over this window
            part = next(
                n for n, _ in ACTION_LAYOUT if not finite[OFFSETS[n][0] : OFFSETS[n][1]].all()
            )
            raise RowError(f"window {a}-{b}: part '{part}' has non-finite actions")
        return {
            "actions": acts,
            "action_mask": mask.tolist(),
            "action_steps": len(acts),
            "action_idle_steps": idle,
            "embodiment": emb,
            "needs_odometry": not (mask[_PART["ego"]] or mask[_PART["ee"]]),
        }


def _actions_array(rows: list[np.ndarray | None]) -> pa.Array:
    """Per row a (steps, ACTION_DIM) array -> list<list<float32>> built from numpy."""
    valid = [r is not None for r in rows]
    steps = [len(r) if r is not None else 0 for r in rows]
    values = np.concatenate([r.reshape(-1) for r in rows if r is not None] or [np.zeros(0)])
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(0, sum(steps) * ACTION_DIM + 1, ACTION_DIM, dtype=np.int32)),
        pa.array(values.astype(np.float32)),
    )
    outer = np.concatenate([[0], np.cumsum(steps)]).astype(np.int32)
    mask = pa.array([not v for v in valid])
    return pa.ListArray.from_arrays(pa.array(outer), inner, mask=mask)
