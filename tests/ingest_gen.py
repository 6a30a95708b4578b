"""Tiny media written byte by byte (no ffmpeg): unique PNGs and WAVs for ingest tests/benchmarks."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def png_bytes(seed: int, w: int = 8, h: int = 8, bitdepth: int = 8) -> bytes:
    """A valid grayscale PNG whose pixels depend on `seed` (so every file has its own hash)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rowlen = (w * bitdepth + 7) // 8
    row0 = bytes([0]) + seed.to_bytes(8, "little")[: min(8, rowlen)].ljust(rowlen, b"\x00")
    comp = zlib.compressobj(9)
    rest = bytes([0]) + b"\x00" * rowlen
    data = comp.compress(row0) + b"".join(comp.compress(rest) for _ in range(h - 1)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, bitdepth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def wav_header(data_bytes: int, rate: int = 16000, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV header announcing `data_bytes` of samples (write them after it)."""
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + fmt
        + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip


def write_wav(path: Path, data_bytes: int, fill: bytes = b"\x01\x00") -> Path:
    """A WAV of `data_bytes` sample bytes, written in chunks (memory stays small)."""
    with open(path, "wb") as fh:
        fh.write(wav_header(data_bytes))
        block = fill * (1 << 19)
        left = data_bytes
        while left > 0:
            fh.write(block[: min(left, len(block))])
            left -= len(block)
    return path
