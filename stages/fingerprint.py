"""`fingerprint`: a weight-free perceptual hash of each clip, for exact and near-exact copies.

Frames are sampled at a fixed rate (default 4 per second, so a trimmed copy samples nearly the
same moments), reduced to 32x32 grey by area averaging and hashed with the classic DCT hash:
the 8x8 lowest frequencies, each bit = coefficient above their median. That survives
re-encodes, rescales and brightness shifts (the DC term is left out). Each frame is hashed
twice, whole and its centre 90%, so a copy cropped by up to ~10% matches one of them.
`fingerprint` holds the pairs (whole, centre) frame after frame. Two clips compare by a
symmetric Chamfer distance over frames, each frame pair at its closest of the four
combinations (`clip_distance`); DEFAULT_MAX_BITS separates copies from other clips.
`fingerprint_vec` is the mean of the frames' bits as +-1 (unit length), for cosine search
and the generic `dedup` at scale.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyarrow as pa

from sila.errors import RowError
from sila.media import sample_frames
from sila.stage import Resources, Stage

HASH_BITS = 64
VIEWS = 2  # hashes per frame: whole, centre crop
CENTRE = 0.9
DEFAULT_MAX_BITS = 14.0  # `python -m bench dedup`: copies <= ~13, other clips >= ~18 bits
_POW = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


@functools.cache
def _dct_matrix(n: int = 32) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


def phash_bits(gray32: np.ndarray) -> np.ndarray:
    """64 booleans from a 32x32 grey frame: low-frequency DCT coefficients above their median."""
    d = _dct_matrix(32)
    coef = d @ gray32.astype(np.float64) @ d.T
    low = coef[:8, :8].ravel()
    return low > np.median(low[1:])  # DC (brightness) takes no part in the threshold


def pack(bits: np.ndarray) -> int:
    return int((bits.astype(np.uint64) * _POW).sum(dtype=np.uint64))


def unpack(hashes) -> np.ndarray:
    """(n,) uint64 -> (n, 64) booleans."""
    h = np.asarray(hashes, dtype=np.uint64)[:, None]
    return (h & _POW[None, :]) != 0


def hamming_matrix(a, b) -> np.ndarray:
    """Bit differences between every hash of `a` and every hash of `b`."""
    x = np.bitwise_xor(np.asarray(a, np.uint64)[:, None], np.asarray(b, np.uint64)[None, :])
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


def clip_distance(a, b) -> float:
    """Symmetric Chamfer distance of two clips' fingerprints, in bits (0 = identical)."""
    a = np.asarray(a, np.uint64).reshape(-1, VIEWS)
    b = np.asarray(b, np.uint64).reshape(-1, VIEWS)
    if len(a) == 0 or len(b) == 0:
        return float(HASH_BITS)
    m = None
    for i in range(VIEWS):
        for j in range(VIEWS):
            h = hamming_matrix(a[:, i], b[:, j])
            m = h if m is None else np.minimum(m, h)
    return float(max(m.min(axis=1).mean(), m.min(axis=0).mean()))


def fingerprint_vector(hashes) -> np.ndarray:
    """Unit mean of the whole-frame hashes' bits as +-1 (for cosine search and `fpdedup`)."""
    whole = np.asarray(hashes, np.uint64).reshape(-1, VIEWS)[:, 0]
    v = (unpack(whole).astype(np.float32) * 2 - 1).mean(axis=0)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _box32(gray: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(gray).resize((32, 32), Image.BOX), np.float64)


def frame_hashes(gray64: np.ndarray) -> list[int]:
    """(whole, centre) hashes of one 64x64 grey frame."""
    b = round(gray64.shape[0] * (1 - CENTRE) / 2)
    centre = np.ascontiguousarray(gray64[b : gray64.shape[0] - b, b : gray64.shape[1] - b])
    return [pack(phash_bits(_box32(gray64))), pack(phash_bits(_box32(centre)))]


def fingerprint_file(path: str, fps: float = 4.0, max_frames: int = 32) -> list[int]:
    frames = sample_frames(path, 1, fps, fmt="gray", max_count=max_frames, size=(64, 64))
    return [h for f in frames for h in frame_hashes(f)]


class Fingerprint(Stage):
    """Perceptual hashes of sampled frames (`fingerprint`) and their +-1 mean (`fingerprint_vec`)."""

    name = "fingerprint"
    table = "clips"
    inputs = ["video"]
    outputs = [
        pa.field("fingerprint", pa.list_(pa.uint64())),
        pa.field("fingerprint_vec", pa.list_(pa.float32(), HASH_BITS)),
    ]
    where = "transcode_error IS NULL AND clip_kind IN ('video', 'image')"  # pictures only
    version = "2"
    model = "dct-phash-8x8 whole+centre90"
    segment_rows = 32
    compute_resources = Resources(cpus=1)
    settings = {"fps": 4.0, "max_frames": 32}

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """One clip's frame hashes and their +-1 mean."""
        if not row["video"]:
            raise RowError("the clip has no video (transcode did not produce one)")
        h = fingerprint_file(
            row["video"], float(self.config["fps"]), int(self.config["max_frames"])
        )
        return {"fingerprint": h, "fingerprint_vec": fingerprint_vector(h).tolist()}
