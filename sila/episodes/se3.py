"""SE(3) helpers for the unified action representation (shared/ACTIONS.md).

Poses are 4x4 homogeneous matrices (camera-to-world, OpenCV axes: x right, y down, z forward).
A pseudo-action is the relative motion between consecutive poses, ΔT_t = T_{t-1}^{-1} T_t,
written as translation (3) + 6D rotation (6: the first two columns of R, Zhou et al. 2019).
Decoding a 6D rotation projects it onto SO(3) with an SVD.
"""

from __future__ import annotations

import numpy as np


def relative(poses: np.ndarray) -> np.ndarray:
    """(N, 4, 4) poses -> (N-1, 4, 4) ΔT_t = T_{t-1}^{-1} T_t."""
    poses = np.asarray(poses, dtype=np.float64)
    return np.linalg.inv(poses[:-1]) @ poses[1:]


def rot_to_6d(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): first column then second column."""
    r = np.asarray(r)
    return np.concatenate([r[..., :, 0], r[..., :, 1]], axis=-1)


def rot_from_6d(x: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) on SO(3): the nearest rotation (SVD projection) to the matrix
    whose first two columns are the 6D vector and whose third is their cross product."""
    x = np.asarray(x, dtype=np.float64)
    a, b = x[..., :3], x[..., 3:6]
    m = np.stack([a, b, np.cross(a, b)], axis=-1)
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u[..., :, -1] *= d[..., None]
    return u @ vt


def pose_to_9d(t: np.ndarray) -> np.ndarray:
    """(..., 4, 4) -> (..., 9): translation + 6D rotation."""
    return np.concatenate([t[..., :3, 3], rot_to_6d(t[..., :3, :3])], axis=-1)


def pose_from_9d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape[:-1] + (4, 4))
    out[..., :3, :3] = rot_from_6d(x[..., 3:9])
    out[..., :3, 3] = x[..., :3]
    out[..., 3, 3] = 1.0
    return out


def quat_to_rot(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions as (x, y, z, w) -> (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def euler_to_rot(rpy: np.ndarray) -> np.ndarray:
    """(..., 3) roll, pitch, yaw (radians, extrinsic x-y-z) -> (..., 3, 3)."""
    r, p, y = (np.asarray(rpy, dtype=np.float64)[..., i] for i in range(3))
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.stack(
        [
            np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
            np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
            np.stack([-sp, cp * sr, cp * cr], -1),
        ],
        -2,
    )


def make_pose(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    rot, trans = np.asarray(rot), np.asarray(trans)
    out = np.zeros(rot.shape[:-2] + (4, 4))
    out[..., :3, :3] = rot
    out[..., :3, 3] = trans
    out[..., 3, 3] = 1.0
    return out


def rotation_angle(r: np.ndarray) -> np.ndarray:
    """Angle (radians) of rotation matrices (..., 3, 3)."""
    tr = np.trace(r, axis1=-2, axis2=-1)
    return np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0))


def resample_poses(t_src: np.ndarray, poses: np.ndarray, t_dst: np.ndarray) -> np.ndarray:
    """Poses at times `t_dst`: translations interpolated linearly, rotations by slerp."""
    from scipy.spatial.transform import Rotation, Slerp

    t_src = np.asarray(t_src, dtype=np.float64)
    t_dst = np.clip(np.asarray(t_dst, dtype=np.float64), t_src[0], t_src[-1])
    if len(t_src) == 1:
        return np.repeat(np.asarray(poses)[:1], len(t_dst), axis=0)
    rots = Slerp(t_src, Rotation.from_matrix(np.asarray(poses)[:, :3, :3]))(t_dst).as_matrix()
    trans = np.stack([np.interp(t_dst, t_src, np.asarray(poses)[:, i, 3]) for i in range(3)], -1)
    return make_pose(rots, trans)


def resample_values(t_src: np.ndarray, values: np.ndarray, t_dst: np.ndarray) -> np.ndarray:
    """(N, ...) values at times `t_dst`, linearly per channel."""
    v = np.asarray(values, dtype=np.float64)
    flat = v.reshape(len(v), -1)
    out = np.stack([np.interp(t_dst, t_src, flat[:, i]) for i in range(flat.shape[1])], -1)
    return out.reshape((len(t_dst),) + v.shape[1:])
