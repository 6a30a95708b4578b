"""Actions throughput: `sila run actions` (windows/s, reading trajectories through the lake)
vs. a plain numpy loop computing the same pseudo-actions from the same poses in memory; and
visual odometry's rotation-direction error on rendered pans.

    python -m bench actions [--episodes 40] [--frames 600]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._util import report


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench actions")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--frames", type=int, default=600)
    args = ap.parse_args(argv)
    from sila.stages.actions import window_actions

    import sila
    from sila.demo.episodes import generic_dataset

    with tempfile.TemporaryDirectory(prefix="sila-bench-actions-") as d:
        root = generic_dataset(Path(d) / "gen", episodes=args.episodes, frames=args.frames)
        lake = sila.Lake(os.path.join(d, "lake")).init()
        lake.ingest([str(root)])
        lake.run("windows")
        n = lake.table("clips").count_rows()
        t = time.perf_counter()
        lake.run("actions")
        ours = n / (time.perf_counter() - t)
        src = (
            lake.table("sources")
            .to_table(
                columns=[
                    "traj_ego",
                    "traj_left_wrist",
                    "traj_right_wrist",
                    "traj_left_fingers",
                    "traj_right_fingers",
                ]
            )
            .to_pylist()
        )
        trajs = [
            {k.removeprefix("traj_"): np.asarray(v, dtype=np.float32) for k, v in s.items()}
            for s in src
        ]
        t = time.perf_counter()
        count = 0
        for traj in trajs:
            frames = len(traj["ego"])
            for a in range(0, frames - 19, 20):
                window_actions(traj, a, a + 20, "egocentric", 1e-3, 1e-3, 1e-3)
                count += 1
        ref = count / (time.perf_counter() - t)
    report(
        "actions_windows_per_s",
        ours,
        ref,
        " win/s",
        f"{n} windows of 20 frames; ratio = stage / plain numpy loop (target >= 0.8)",
    )
    _vo()
    return 0


def _vo() -> None:
    from sila.stages.camera_motion import CameraMotion

    from tests.test_episodes import render_pan

    errs = []
    with tempfile.TemporaryDirectory(prefix="sila-bench-vo-") as d:
        for i, yaw in enumerate((0.3, 0.6, 1.0)):
            p = Path(d) / f"pan{i}.mp4"
            axis, _ = render_pan(p, frames=20, yaw_deg=yaw)
            st = CameraMotion(sample_fps=10)
            st.setup(None)
            out = st._one(str(p), 160, 120)
            got = np.asarray(out["cam_rotation_axis"])
            errs.append(math.degrees(math.acos(min(1.0, abs(float(got @ axis))))))
    print(
        f"vo_rotation_direction_error_deg: max={max(errs):.2f} mean={np.mean(errs):.2f} "
        f"(pans of 0.3, 0.6, 1.0 deg/frame; target < 5)"
    )
