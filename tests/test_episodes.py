"""Episodes and actions: LeRobot v2/v3 and the generic layout ingest end to end, alignment is
checked (a late stream is a reported failure with its offset), windows, pseudo-actions that
recover known motions, normalisers that round-trip, and visual odometry on a rendered pan."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import sila
from sila.episodes.se3 import pose_from_9d, pose_to_9d, relative, rot_from_6d, rot_to_6d
from tests.episode_data import generic_dataset, lerobot_v2, lerobot_v3, rz


@pytest.fixture(scope="module")
def episode_lake(tmp_path_factory):
    d = tmp_path_factory.mktemp("episodes")
    gen = generic_dataset(d / "gen", episodes=3, late_start_s=0.3)
    v2, v3 = lerobot_v2(d / "v2"), lerobot_v3(d / "v3")
    lake = sila.Lake(d / "lake").init()
    rep = lake.ingest([str(gen), str(v2), str(v3)])
    assert lake.run("windows")["state"] == "succeeded"
    assert lake.run("actions")["state"] == "succeeded"
    return lake, rep, (gen, v2, v3)


def test_6d_rotation_round_trip_and_relative_poses():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(500, 4))
    from sila.episodes.se3 import quat_to_rot

    r = quat_to_rot(q)
    assert np.abs(rot_from_6d(rot_to_6d(r)) - r).max() < 1e-5
    noisy = rot_to_6d(r) + rng.normal(scale=1e-3, size=(500, 6))
    back = rot_from_6d(noisy)
    assert np.allclose(back @ np.swapaxes(back, 1, 2), np.eye(3), atol=1e-9)  # on SO(3)
    assert np.allclose(np.linalg.det(back), 1.0)
    poses = np.stack([np.eye(4)] * 3)
    poses[1, :3, 3] = [1, 0, 0]
    poses[2, :3, :3] = rz(np.array(np.pi / 2))
    poses[2, :3, 3] = [1, 0, 0]
    d = relative(poses)
    assert np.allclose(d[0, :3, 3], [1, 0, 0]) and np.allclose(
        d[1, :3, :3], rz(np.array(np.pi / 2))
    )
    assert np.allclose(pose_from_9d(pose_to_9d(d)), d)


def test_ingest_checks_alignment_and_reports_the_offset(episode_lake):
    lake, rep, (gen, v2, v3) = episode_lake
    assert rep.added == 2 + 2 + 2 and rep.failed == 1
    (fail,) = rep.failures
    assert "ep02" in fail["error"] and "'hands' starts 0.300 s after the video" in fail["error"]
    again = lake.ingest([str(gen), str(v2), str(v3)])
    assert again.added == 0 and again.present == 6  # content ids: nothing twice
    rows = lake.sql(
        "select embodiment, episode_index, video_offset_s, episode_frames, language, stored, "
        "media_kind from sources order by embodiment, video_offset_s"
    ).to_pylist()
    assert {r["media_kind"] for r in rows} == {"episode"} and {r["stored"] for r in rows} == {
        "reference"
    }
    assert [r["video_offset_s"] for r in rows if r["embodiment"] == "robot"] == [0.0, 0.0, 0.0, 3.0]
    assert rows[0]["language"] == ["pick up cup 0"]


def test_windows_and_actions_recover_known_motion(episode_lake):
    lake, _, _ = episode_lake
    clips = lake.sql(
        "select c.id, c.start_frame, c.end_frame, c.start_s, c.action_steps, c.actions, "
        "c.action_mask, c.embodiment, s.video_offset_s from clips c join sources s "
        "on c.source_id = s.id order by c.id"
    ).to_pylist()
    assert len(clips) == 2 * 2 + 4  # 45-frame ego episodes: 2 windows of 20; robot: 1 of 30
    for c in clips:
        assert c["end_frame"] - c["start_frame"] == 20
        assert math.isclose(c["start_s"], c["video_offset_s"] + c["start_frame"] / 10, abs_tol=1e-6)
        assert c["action_steps"] == (19 if c["start_frame"] == 0 else 20)
    ego = next(c for c in clips if c["embodiment"] == "egocentric" and c["start_frame"] == 20)
    a = np.asarray(ego["actions"])
    assert ego["action_mask"] == [True, True, True, False, True, True, False]
    d = pose_from_9d(a[:, 0:9])
    assert np.allclose(d[:, :3, 3], [0.01, 0, 0], atol=1e-5)  # the head moves along its own x
    assert np.allclose(d[:, :3, :3], rz(np.array(np.deg2rad(1.0))), atol=1e-5)
    robot = next(c for c in clips if c["embodiment"] == "robot" and c["video_offset_s"] == 3.0)
    r = np.asarray(robot["actions"])
    assert robot["action_mask"] == [False, False, False, True, False, False, True]
    ee = pose_from_9d(r[:, 27:36])
    assert np.allclose(np.degrees(np.arctan2(ee[:, 1, 0], ee[:, 0, 0])), 2.0, atol=1e-3)
    assert r[:, 66].tolist() == [0.0] * 14 + [1.0] * 5  # grasp is the current value, not a delta
    per = lake.sql(
        "select s.embodiment, count(distinct s.id) as episodes, "
        "sum(c.duration_s) / 3600 as hours, "
        "sum(c.action_idle_steps)::double / sum(c.action_steps) as idle_fraction "
        "from clips c join sources s on c.source_id = s.id group by 1 order by 1"
    ).to_pylist()
    assert [p["embodiment"] for p in per] == ["egocentric", "robot"]
    assert per[1]["episodes"] == 4 and per[1]["idle_fraction"] == 0.0


def test_idle_steps_are_counted_not_dropped():
    from sila.stages.actions import window_actions

    still = np.repeat(np.eye(4).reshape(1, 16), 10, 0)
    still[6:, 3] = 0.05 * np.arange(1, 5)  # moves from frame 6 on
    acts, mask, idle = window_actions({"ego": still}, 0, 10, "camera", 1e-3, 1e-3, 1e-3)
    assert len(acts) == 9 and idle == 5 and mask[0] and not mask[1:].any()


def test_normalizer_fits_on_train_and_round_trips(episode_lake):
    lake, _, _ = episode_lake
    assert (
        lake.run("assign_split", settings={"ratios": {"train": 0.7, "val": 0.3}})["state"]
        == "succeeded"
    )
    assert lake.run("normalize")["state"] == "succeeded"
    from sila.stages.normalize import denormalize, load_normalizer

    stats = load_normalizer(lake)
    assert stats["scope"] == "rows assigned to train"
    t = lake.sql(
        "select actions, actions_norm, action_mask, split from clips where actions is not null"
    ).to_pylist()
    for row in t:
        a, y = np.asarray(row["actions"]), np.asarray(row["actions_norm"])
        dims = np.zeros(67, bool)
        from sila.stages.normalize import part_mask_to_dims

        dims = part_mask_to_dims(row["action_mask"])
        assert np.allclose(denormalize(y, stats, "quantile")[:, dims], a[:, dims], atol=1e-4)
        assert np.all(y[:, ~dims] == 0)
    field = lake.table("clips").schema.field("actions_norm")
    assert field.metadata[b"sila.normalize_scope"] == b"rows assigned to train"


def render_pan(path: Path, frames: int = 20, yaw_deg: float = 0.6, w: int = 160, h: int = 120):
    """A camera yawing over a textured plane at infinity: known rotation per frame."""
    import av
    import cv2

    rng = np.random.default_rng(3)
    big = cv2.GaussianBlur((rng.random((h * 3, w * 3)) * 255).astype(np.uint8), (5, 5), 0)
    f = (w / 2) / math.tan(math.radians(60) / 2)
    k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    kb = np.array([[f, 0, 1.5 * w], [0, f, 1.5 * h], [0, 0, 1]])
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "12"}
        for i in range(frames):
            a = math.radians(yaw_deg * i)
            ry = np.array(
                [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
            )
            m = kb @ ry @ np.linalg.inv(k)  # output pixel -> texture pixel
            img = cv2.warpPerspective(big, m, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
            frame = av.VideoFrame.from_ndarray(np.stack([img] * 3, -1), format="rgb24")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return np.array([0.0, 1.0, 0.0]), yaw_deg * (frames - 1)


def test_visual_odometry_recovers_the_pan_direction(tmp_path):
    pytest.importorskip("cv2")
    from sila.stages.camera_motion import CameraMotion

    axis, total = render_pan(tmp_path / "pan.mp4")
    st = CameraMotion(sample_fps=10)
    st.setup(None)
    out = st.process_row({"video": str(tmp_path / "pan.mp4"), "source_id": "pan"})
    got = np.asarray(out["cam_rotation_axis"])
    err = math.degrees(math.acos(min(1.0, abs(float(got @ axis)))))
    assert err < 5.0, (got, out)
    assert abs(out["cam_rotation_deg"] - total) < 0.2 * total
    assert out["cam_reliable"], out["cam_reasons"]
