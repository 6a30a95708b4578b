"""The ffmpeg binary: where it is, and running it with its errors as MediaError."""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess

from sila.errors import MediaError

logger = logging.getLogger(__name__)

_CTX_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: ``ffmpeg`` on PATH, else imageio-ffmpeg's static build."""
    import imageio_ffmpeg

    return shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(
    args: list[str], *, input_bytes: bytes | None = None, timeout: float | None = None
) -> bytes:
    """Run ffmpeg with ``args`` (quiet, non-interactive); return stdout.

    Raises MediaError carrying the tail of ffmpeg's stderr on failure or timeout.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    logger.debug("running %s", " ".join(cmd))
    try:
        stdin = subprocess.DEVNULL if input_bytes is None else None
        proc = subprocess.run(
            cmd, input=input_bytes, stdin=stdin, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg timed out after {timeout} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", errors="replace")
        tail = stderr_tail(err, lines=3) or "no error output"
        raise MediaError(f"ffmpeg failed (exit {proc.returncode}): {tail}", stderr=err)
    return proc.stdout


def stderr_tail(stderr: str, lines: int = 1) -> str:
    """Last ``lines`` non-empty stderr lines, without ffmpeg's "[ctx @ 0x...]" prefixes."""
    text = [ln for ln in (_CTX_PREFIX.sub("", x).strip() for x in stderr.splitlines()) if ln]
    return " | ".join(text[-lines:])[-500:]
