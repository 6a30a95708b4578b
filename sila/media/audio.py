"""Audio decoding: a file's first audio stream as mono float32 blocks at a sample rate.

Streamed out of ffmpeg (its resampler), so memory is one block whatever the clip's length.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

import numpy as np

from sila.errors import MediaError
from sila.media.ffmpeg import ffmpeg_exe, stderr_tail
from sila.media.probing import display_path


def audio_blocks(
    path: str,
    sample_rate: int = 16000,
    block_s: float = 10.0,
    timeout_s: float = 300.0,
    label: str | None = None,
) -> Iterator[np.ndarray]:
    """Mono float32 samples (full scale 1.0) of the first audio stream, `block_s` seconds a
    block. MediaError (naming `label`, the user's path, else `path`) when it does not decode."""
    args = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
        "-i", "file:" + os.path.abspath(path), "-map", "0:a:0", "-vn", "-sn",
        "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-",
    ]  # fmt: skip
    nbytes = int(sample_rate * block_s) * 4
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        tail = b""
        while True:
            buf = proc.stdout.read(nbytes)
            if not buf:
                break
            buf = tail + buf
            cut = len(buf) - len(buf) % 4
            tail = buf[cut:]
            if cut:
                yield np.frombuffer(buf[:cut], np.float32)
        err = proc.stderr.read().decode("utf-8", errors="replace")
        rc = proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:  # the reader stopped early: do not leave ffmpeg behind
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            proc.stdout.close()
            proc.stderr.close()
    if rc != 0:
        shown = label or display_path(path)
        raise MediaError(f"ffmpeg could not decode audio: {stderr_tail(err) or rc}: {shown}")
