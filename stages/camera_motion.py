"""`camera_motion`: ego pseudo-actions from video where no poses exist (classical visual odometry).

Per pair of sampled frames: corners tracked with pyramidal Lucas-Kanade, RANSAC on a homography
to drop outliers, then the rotation from the inlier bearing vectors (orthogonal Procrustes with
the given or assumed intrinsics: valid for pure rotation, where an essential matrix is not) and,
when the parallax left after removing that rotation is large enough, the scale-free translation
direction from the essential matrix. Unreliable clips are flagged with reasons, not silently
kept: too few tracked points, few inliers, jitter (rotation steps that flip back and forth) and
abnormal intrinsics. Output deltas use the `actions` ego layout (translation direction + 6D).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from sila.episodes.se3 import make_pose, pose_to_9d, rotation_angle
from sila.errors import RowError, SilaError
from sila.media import FrameReader
from sila.stage import Stage


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise SilaError("camera_motion needs OpenCV: pip install opencv-python-headless") from e
    return cv2


def intrinsics_for(w: int, h: int, given: list[float] | None, fov_deg: float) -> np.ndarray:
    if given:
        fx, fy, cx, cy = given
    else:
        fx = fy = (w / 2) / math.tan(math.radians(fov_deg) / 2)
        cx, cy = w / 2, h / 2
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)


def procrustes_rotation(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """R minimising ||b2 - R b1|| over unit bearing vectors (Kabsch)."""
    u, _, vt = np.linalg.svd(b2.T @ b1)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def frame_pair_motion(cv2, g1, g2, k: np.ndarray, min_points: int):
    """(R, t_dir, inlier_ratio) from frame 1 to frame 2 (camera coordinates, OpenCV axes)."""
    p1 = cv2.goodFeaturesToTrack(g1, maxCorners=400, qualityLevel=0.01, minDistance=7)
    if p1 is None or len(p1) < min_points:
        return None
    p2, st, _ = cv2.calcOpticalFlowPyrLK(g1, g2, p1, None, winSize=(21, 21), maxLevel=3)
    ok = st.reshape(-1) == 1
    p1, p2 = p1.reshape(-1, 2)[ok], p2.reshape(-1, 2)[ok]
    if len(p1) < min_points:
        return None
    _, inl = cv2.findHomography(p1, p2, cv2.RANSAC, 2.0)
    if inl is None:
        return None
    inl = inl.reshape(-1).astype(bool)
    kinv = np.linalg.inv(k)

    def bearings(p):
        h = np.c_[p, np.ones(len(p))] @ kinv.T
        return h / np.linalg.norm(h, axis=1, keepdims=True)

    b1, b2 = bearings(p1[inl]), bearings(p2[inl])
    if len(b1) < min_points:
        return None
    # the camera rotates by R_c; points in camera coordinates move by R_c^T
    r_points = procrustes_rotation(b1, b2)
    r_cam = r_points.T
    t = np.zeros(3)
    resid = b2 - b1 @ r_points.T
    if np.median(np.linalg.norm(resid, axis=1)) * k[0, 0] > 1.0:  # > ~1 px parallax
        e, m = cv2.findEssentialMat(p1[inl], p2[inl], k, cv2.RANSAC, 0.999, 1.0)
        if e is not None and e.shape == (3, 3):
            _, r_e, t_e, _ = cv2.recoverPose(e, p1[inl], p2[inl], k, mask=m)
            t = (-r_e.T @ t_e).reshape(3)  # camera-centre motion in frame-1 coordinates
    return r_cam, t, float(inl.mean())


class CameraMotion(Stage):
    """Visual odometry on canonical clips: ego deltas (scale-free) + reliability."""

    name = "camera_motion"
    table = "clips"
    inputs = ["video", "source_id"]  # the source id names the clip's source in row errors
    where = "clip_kind = 'video'"  # images and audio have no camera motion
    outputs = [
        pa.field("cam_actions", pa.list_(pa.list_(pa.float32()))),  # steps x 9
        pa.field("cam_rotation_deg", pa.float32()),
        pa.field("cam_rotation_axis", pa.list_(pa.float32(), 3)),
        pa.field("cam_inlier_ratio", pa.float32()),
        pa.field("cam_reliable", pa.bool_()),
        pa.field("cam_reasons", pa.list_(pa.string())),
    ]
    version = "2"  # 2: frames from sila.media on an fps grid, long side at most max_width
    segment_rows = 8
    settings = {
        "sample_fps": 5.0,
        "max_width": 320,  # the long side of the analysed frames, at most
        "fov_deg": 60.0,  # assumed horizontal field of view without intrinsics
        "min_points": 30,
        "min_inlier_ratio": 0.5,
        "max_jitter": 0.5,  # share of steps whose rotation reverses the previous one
    }

    def gate(self) -> list[str]:
        """Windows of an episode that has a camera or end-effector pose are skipped (`actions`
        writes `needs_odometry` false for them); plain clips and pose-less episodes are not."""
        return ["needs_odometry"]

    def setup(self, ctx) -> None:
        self.cv2 = _cv2()

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """One clip's ego deltas and reliability; an unreadable clip is a MediaError (a row
        error naming the user's path), never a crash of the stage."""
        path = row["video"]
        if not path:
            raise RowError("no canonical clip: run `sila run transcode` first")
        reader = FrameReader(
            path,
            fps=float(self.config["sample_fps"]),
            max_side=int(self.config["max_width"]),
            even=True,
            fmt="gray",
            interpolation="BILINEAR",
        )
        return self.motion(iter(reader))

    def motion(self, frames: Iterator[np.ndarray]) -> dict[str, Any]:
        """Ego deltas and reliability from gray frames sampled at `sample_fps`, taken one pair
        at a time (memory: two frames, whatever the clip's length)."""
        prev = next(frames, None)
        if prev is None:
            raise RowError("fewer than 2 sampled frames")
        fh, fw = prev.shape
        k = intrinsics_for(fw, fh, None, float(self.config["fov_deg"]))
        reasons = []
        if not (0.3 < k[0, 0] / fw < 5.0):
            reasons.append("abnormal_intrinsics")
        deltas, ratios, rots = [], [], []
        pose = np.eye(4)
        for g2 in frames:
            m = frame_pair_motion(self.cv2, prev, g2, k, int(self.config["min_points"]))
            prev = g2
            if m is None:
                reasons.append("few_tracked_points")
                deltas.append(np.eye(4))
                continue
            r, t, ratio = m
            d = make_pose(r, t)
            deltas.append(d)
            ratios.append(ratio)
            rots.append(r)
            pose = pose @ d
        if not deltas:
            raise RowError("fewer than 2 sampled frames")
        inlier = float(np.mean(ratios)) if ratios else 0.0
        if ratios and inlier < float(self.config["min_inlier_ratio"]):
            reasons.append("few_inliers")
        axes = []
        for r in rots:
            ang = rotation_angle(r)
            if ang > 1e-4:
                axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
                axes.append(axis / np.linalg.norm(axis))
        if len(axes) >= 3:
            flips = sum(1 for a, b in zip(axes, axes[1:], strict=False) if float(a @ b) < -0.5)
            if flips / (len(axes) - 1) > float(self.config["max_jitter"]):
                reasons.append("jitter")
        total = pose[:3, :3]
        ang = float(np.degrees(rotation_angle(total)))
        axis = np.array(
            [total[2, 1] - total[1, 2], total[0, 2] - total[2, 0], total[1, 0] - total[0, 1]]
        )
        axis = axis / np.linalg.norm(axis) if np.linalg.norm(axis) > 1e-9 else np.zeros(3)
        reasons = sorted(set(reasons))
        return {
            "cam_actions": [pose_to_9d(d).astype(np.float32).tolist() for d in deltas],
            "cam_rotation_deg": ang,
            "cam_rotation_axis": axis.astype(np.float32).tolist(),
            "cam_inlier_ratio": inlier,
            "cam_reliable": not reasons,
            "cam_reasons": reasons,
        }
