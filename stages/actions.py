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

import numpy as np
import pyarrow as pa

from sila.se3 import pose_to_9d, relative, rotation_angle
from sila.stage import Stage

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


class Actions(Stage):
    """Unified pseudo-actions per window, with the mask of the parts present."""

    name = "actions"
    table = "clips"
    inputs = [
        "start_frame",
        "end_frame",
        "sources.embodiment",
        "sources.traj_ego",
        "sources.traj_left_wrist",
        "sources.traj_right_wrist",
        "sources.traj_ee",
        "sources.traj_left_fingers",
        "sources.traj_right_fingers",
        "sources.traj_gripper",
    ]
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
    ]
    version = "1"
    segment_rows = 128
    settings = {"idle_translation": 1e-3, "idle_rotation": 1e-3, "idle_grasp": 1e-3}

    def compute(self, batch: pa.RecordBatch):
        cols = {n: batch.column(f"sources.traj_{n}").to_pylist() for n, _ in ACTION_LAYOUT}
        emb = batch.column("sources.embodiment").to_pylist()
        starts = batch.column("start_frame").to_pylist()
        ends = batch.column("end_frame").to_pylist()
        out = {
            k: []
            for k in (
                "actions",
                "action_mask",
                "action_steps",
                "action_idle_steps",
                "embodiment",
                "actions_error",
            )
        }
        for r in range(batch.num_rows):
            if emb[r] is None:  # a plain video: no trajectories (see camera_motion)
                for k in out:
                    out[k].append(None)
                continue
            traj = {
                n: None if cols[n][r] is None else np.asarray(cols[n][r], dtype=np.float32)
                for n, _ in ACTION_LAYOUT
            }
            frames = max((len(v) for v in traj.values() if v is not None), default=0)
            if frames and ends[r] > frames:
                out["actions_error"].append(
                    f"window ends at frame {ends[r]} but the episode has {frames} frames"
                )
                for k in (
                    "actions",
                    "action_mask",
                    "action_steps",
                    "action_idle_steps",
                    "embodiment",
                ):
                    out[k].append(None)
                continue
            acts, mask, idle = window_actions(
                traj,
                starts[r],
                ends[r],
                emb[r],
                float(self.config["idle_translation"]),
                float(self.config["idle_rotation"]),
                float(self.config["idle_grasp"]),
            )
            out["actions"].append(acts.tolist())
            out["action_mask"].append(mask.tolist())
            out["action_steps"].append(len(acts))
            out["action_idle_steps"].append(idle)
            out["embodiment"].append(emb[r])
            out["actions_error"].append(None)
        return out
