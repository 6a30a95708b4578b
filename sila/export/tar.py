"""Deterministic tar members for export shards: fixed metadata, offsets for Energon, hashing
while writing (a shard is never read back to checksum it)."""

from __future__ import annotations

import tarfile


def member_ext(head: bytes) -> str:
    """A media member's extension from its leading bytes (what WebDataset decoders key on)."""
    if head[4:8] == b"ftyp":
        return "m4a" if head[8:11] == b"M4A" else "mp4"
    if head[:3] == b"\xff\xd8\xff":
        return "jpg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] in (b"RIFF",):
        return "wav"
    return "bin"


class HashingWriter:
    """A write-only file that hashes what passes through (no second read of the shard)."""

    def __init__(self, f, h) -> None:
        self.f, self.h = f, h

    def write(self, data) -> int:
        self.h.update(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.f.tell()

    def flush(self) -> None:
        self.f.flush()


def add_member(tar: tarfile.TarFile, name: str, fileobj, size: int) -> dict:
    """Add one member with zero mtime and owners (same inputs, same bytes); returns its name
    suffix, data offset and size (Energon's index)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    header = len(info.tobuf(tar.format, tar.encoding, tar.errors))
    offset = tar.offset
    tar.addfile(info, fileobj)
    return {"name": name.split(".", 1)[1], "offset": offset + header, "size": size}
