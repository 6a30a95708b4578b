"""Audio measurements for `audio_signals`, streamed over blocks of mono 16 kHz samples.

Non-silence (the inputs of the paper's policy; their exact formulas are ours, stated here):

* ``max_abs``: the largest absolute sample value of the mono mix-down, full scale = 1.0;
* ``p50_db``: the median over 20 ms frames of the frame's RMS level in dBFS
  (``20 * log10(rms)``, floored at -200 dB; kept as a 0.1 dB histogram, so memory is bounded);
* ``active_ratio``: the fraction of 20 ms frames whose RMS level is at least -60 dBFS.

``speech_ratio``: the fraction of 32 ms windows that Silero VAD scores >= 0.5 (its model ships in
the `silero-vad` wheel). ``music_ratio`` (the built-in estimator, used unless a classifier is
given): the fraction of 1 s windows (0.5 s hop) that are *music*: mostly tonal frames (spectral
flatness below 0.25), pitch content that changes (the 12-bin chroma of consecutive 125 ms steps
correlates below 0.6 at least once: notes change; a held tone does not), and not speech (mean
VAD score below 0.5). Noise is not tonal; a steady tone never changes; speech is gated by VAD.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from sila.model import Model

SR = 16000
FRAME = 320  # 20 ms
ACTIVE_DB = -60.0
_BINS = np.arange(-200.0, 0.1, 0.1)
VAD_WINDOW = 512  # Silero's window at 16 kHz (32 ms)
N_FFT, HOP = 1024, 512


@dataclass
class SilenceStats:
    max_abs: float
    p50_db: float
    active_ratio: float


class SilenceMeter:
    def __init__(self) -> None:
        self.max_abs = 0.0
        self.hist = np.zeros(len(_BINS) + 1, np.int64)
        self.frames = self.active = 0
        self.rest = np.zeros(0, np.float32)

    def add(self, x: np.ndarray) -> None:
        if x.size:
            self.max_abs = max(self.max_abs, float(np.abs(x).max()))
        x = np.concatenate([self.rest, x])
        n = len(x) // FRAME
        self.rest = x[n * FRAME :]
        if n:
            self._frames(x[: n * FRAME].reshape(n, FRAME))

    def _frames(self, fr: np.ndarray) -> None:
        rms = np.sqrt(np.mean(fr.astype(np.float64) ** 2, axis=1))
        db = np.maximum(20 * np.log10(np.maximum(rms, 1e-10)), -200.0)
        self.hist += np.bincount(np.searchsorted(_BINS, db), minlength=len(self.hist))
        self.frames += len(db)
        self.active += int((db >= ACTIVE_DB).sum())

    def result(self) -> SilenceStats | None:
        if self.rest.size:  # the last partial frame counts as a frame
            self._frames(self.rest[None, :])
            self.rest = np.zeros(0, np.float32)
        if not self.frames:
            return None
        median_idx = int(np.searchsorted(np.cumsum(self.hist), (self.frames + 1) / 2))
        p50 = float(_BINS[min(median_idx, len(_BINS) - 1)])
        return SilenceStats(self.max_abs, p50, self.active / self.frames)


def silence_stats(x: np.ndarray) -> SilenceStats | None:
    m = SilenceMeter()
    m.add(x.astype(np.float32))
    return m.result()


def _chroma_weights() -> tuple[np.ndarray, np.ndarray]:
    freqs = np.fft.rfftfreq(N_FFT, 1 / SR)
    band = (freqs >= 80) & (freqs <= 4000)
    pitch = np.zeros(len(freqs), np.int64)
    pitch[band] = np.round(12 * np.log2(freqs[band] / 440.0)).astype(np.int64) % 12
    return band, pitch


_BAND, _PITCH = _chroma_weights()
# band bins -> 12 pitch classes: one matrix product per block
_CHROMA = np.stack([(_PITCH[_BAND] == k).astype(np.float32) for k in range(12)], axis=1)


class MusicMeter:
    """Frame features for the music estimator; windows are decided in `result`.

    Keeps one flatness value and one 12-bin chroma per 32 ms hop: bounded by the clip length
    at 406 floats per second.
    """

    def __init__(self) -> None:
        self.rest = np.zeros(0, np.float32)
        self.flat: list[float] = []
        self.chroma: list[np.ndarray] = []
        self.window = np.hanning(N_FFT).astype(np.float32)

    def add(self, x: np.ndarray) -> None:
        x = np.concatenate([self.rest, x])
        n = 0 if len(x) < N_FFT else 1 + (len(x) - N_FFT) // HOP
        if n:
            idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
            spec = np.abs(np.fft.rfft(x[idx] * self.window, axis=1)) ** 2 + 1e-12
            band = spec[:, _BAND]
            flat = np.exp(np.mean(np.log(band), axis=1)) / np.mean(band, axis=1)
            loud = band.sum(axis=1) > 1e-4 * N_FFT  # skip near-silent frames
            chroma = band @ _CHROMA
            self.flat += [float(f) if ok else 1.0 for f, ok in zip(flat, loud, strict=True)]
            self.chroma += list(chroma)
            x = x[n * HOP :]
        self.rest = x

    def result(self, vad_probs: np.ndarray | None) -> float | None:
        """Fraction of 1 s windows (0.5 s hop) that are music; None for < 1 s of audio."""
        per_s = SR / HOP
        win, hop, step = int(per_s), int(per_s / 2), int(per_s / 8)
        n = len(self.flat)
        if n < win:
            return None if n < win // 2 else self._window_is_music(0, n, step, vad_probs) * 1.0
        starts = range(0, n - win + 1, hop)
        votes = [self._window_is_music(s, s + win, step, vad_probs) for s in starts]
        return float(np.mean(votes))

    def _window_is_music(self, a: int, b: int, step: int, vad: np.ndarray | None) -> bool:
        flat = np.asarray(self.flat[a:b])
        if np.mean(flat < 0.25) < 0.6:
            return False
        if vad is not None and len(vad):
            t0, t1 = a * HOP / SR, b * HOP / SR
            i0, i1 = (
                int(t0 * SR / VAD_WINDOW),
                max(int(t0 * SR / VAD_WINDOW) + 1, int(t1 * SR / VAD_WINDOW)),
            )
            if float(np.mean(vad[i0:i1])) >= 0.5:
                return False
        c = np.asarray(self.chroma[a:b])
        steps = [c[i : i + step].mean(axis=0) for i in range(0, len(c) - step + 1, step)]
        for u, v in zip(steps, steps[1:], strict=False):
            u, v = u - u.mean(), v - v.mean()
            den = float(np.linalg.norm(u) * np.linalg.norm(v))
            if den > 0 and float(u @ v) / den < 0.6:
                return True
        return False


@dataclass
class SileroModel(Model):
    """Silero VAD's sequence ONNX export, shipped in the `silero-vad` wheel (CPU, one thread)."""

    name: str = "silero-vad"
    tag: str = "silero_vad_16k_sequence.onnx"

    family = "silero"
    weights_env = "SILA_SILERO_WEIGHTS"

    def packaged_weights(self) -> str | None:
        """The ONNX file inside the installed `silero-vad` wheel."""
        import importlib.util

        spec = importlib.util.find_spec("silero_vad")
        if spec is None or not spec.origin:
            return None
        path = os.path.join(os.path.dirname(spec.origin), "data", self.tag)
        return path if os.path.isfile(path) else None

    def fetch_hint(self) -> str:
        """The wheel ships the file: reinstall it, or point at a copy."""
        return (
            f"The file '{self.tag}' ships inside the silero-vad wheel; reinstall it "
            f"(`pip install --force-reinstall silero-vad`), or point {self.weights_env} at a copy"
        )

    def build(self, path: str | None, device: str) -> Any:
        """An onnxruntime session on one CPU thread (a 32 ms window is too small for a GPU)."""
        import onnxruntime

        if path is None:
            raise ValueError("Silero VAD has no random-weights mode")
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # one core per worker
        return onnxruntime.InferenceSession(
            path, sess_options=opts, providers=["CPUExecutionProvider"]
        )


class SileroVad:
    """Silero VAD from the `silero-vad` wheel: its sequence ONNX export, one call per block.

    Each row of the input is 64 samples of context + a 512-sample (32 ms) window, as the wheel's
    per-window wrapper builds it; the recurrent state carries across blocks. On the test corpus
    its probabilities equal the per-window model's exactly, at a fifth of the time.
    """

    name = "silero-vad (silero_vad_16k_sequence.onnx)"
    CONTEXT = 64

    def __init__(self, model: SileroModel | None = None) -> None:
        self.model = model or SileroModel()
        self.session = self.model.load("cpu")
        self.reset()

    def reset(self) -> None:
        self.h = np.zeros((1, 1, 128), np.float32)
        self.c = np.zeros((1, 1, 128), np.float32)
        self.context = np.zeros(self.CONTEXT, np.float32)
        self.out: list[np.ndarray] = []
        self.rest = np.zeros(0, np.float32)

    def add(self, x: np.ndarray) -> None:
        x = np.concatenate([self.rest, x.astype(np.float32, copy=False)])
        n = len(x) // VAD_WINDOW
        self.rest = x[n * VAD_WINDOW :]
        if not n:
            return
        wins = x[: n * VAD_WINDOW].reshape(n, VAD_WINDOW)
        ctx = np.concatenate([self.context[None, :], wins[:-1, -self.CONTEXT :]], axis=0)
        rows = np.ascontiguousarray(np.concatenate([ctx, wins], axis=1))
        probs, self.h, self.c = self.session.run(None, {"input": rows, "h": self.h, "c": self.c})
        self.context = wins[-1, -self.CONTEXT :].copy()
        self.out.append(np.asarray(probs, np.float32).reshape(-1))

    def result(self) -> np.ndarray:
        return np.concatenate(self.out) if self.out else np.zeros(0, np.float32)
