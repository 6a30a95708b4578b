"""Fragments bounded by rows and bytes, memory bounded by the largest file, no bytes for error
rows, object stores streamed object by object, and messages that say what went wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from ingest_gen import png_bytes, write_wav

import sila

MiB = 1 << 20


def test_fragments_bounded_by_rows_and_bytes(lake, tmp_path):
    d = tmp_path / "wavs"
    d.mkdir()
    for i in range(6):
        write_wav(d / f"a{i}.wav", MiB, fill=bytes([i, 0]))
    write_wav(d / "big.wav", 5 * MiB)  # larger than the bound: a fragment of its own
    rep = lake.ingest([d], bytes_per_fragment=int(2.5 * MiB))
    frags = lake.table("sources").get_fragments()
    assert rep.fragments == len(frags) == 4
    assert sorted(f.count_rows() for f in frags) == [1, 2, 2, 2]
    for i in range(3):
        (d / f"img{i}.png").write_bytes(png_bytes(i))
    rep = lake.ingest([d], rows_per_fragment=1)
    assert (rep.added, rep.present, rep.fragments) == (3, 7, 3)
    blobs = lake.table("sources").take_blobs("media", indices=[0])
    assert blobs[0].read() == (d / "a0.wav").read_bytes()


def test_error_rows_store_no_bytes(lake, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(16 * MiB))
    rep = lake.ingest([junk])
    assert rep.failed == 1 and "not a media file" in rep.failures[0]["error"]
    assert lake.table("sources").take_blobs("media", indices=[0])[0] is None
    lance_bytes = sum(p.stat().st_size for p in Path(lake.table_uri("sources")).rglob("*"))
    assert lance_bytes < MiB


PEAK = """
import json, resource, sys
import sila
lake = sila.Lake(sys.argv[1]).init()
lake.ingest([sys.argv[3]], rows_per_fragment=1)  # warm up: imports, table creation
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rep = lake.ingest([sys.argv[2]], reference=sys.argv[4] == "ref")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"added": rep.added, "failed": rep.failed, "growth": peak - base}))
"""


@pytest.mark.slow
def test_peak_memory_is_one_copy_of_the_file(tmp_path):
    big = write_wav(tmp_path / "big.wav", 128 * MiB)
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes(1))
    size = big.stat().st_size
    for mode, limit in (("blob", size + 96 * MiB), ("ref", 96 * MiB)):
        out = subprocess.run(
            [sys.executable, "-c", PEAK, str(tmp_path / f"lake-{mode}"), str(big), str(small), mode],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["added"] == 1 and got["failed"] == 0
        assert got["growth"] < limit, (mode, got["growth"] / MiB)  # the old path took 2x size


def test_remote_objects_stream_one_chunk_at_a_time(s3_server, monkeypatch):
    import obstore
    from sila.coordinator.store import open_store

    import sila.ingest.run as ing
    import sila.ingest.write as iw

    src = s3_server.bucket()
    store = open_store(f"s3://{src}", s3_server.options)
    for i in range(7):
        obstore.put(store, f"raw/img{i}.png", png_bytes(i))
    obstore.put(store, "raw/notes.txt", b"just words\n")
    obstore.put(store, "raw/.cache/x.png", png_bytes(99))
    obstore.put(store, "rawer/other.png", png_bytes(98))  # "raw/" must not match "rawer/"
    monkeypatch.setattr(ing, "CHUNK", 2)
    held: list[int] = []
    real = iw._download

    def spy(uri, scratch, store_for):
        out = real(uri, scratch, store_for)
        held.append(len(os.listdir(scratch)))
        return out

    monkeypatch.setattr(iw, "_download", spy)
    lake = sila.Lake(f"s3://{s3_server.bucket()}/lake", storage_options=s3_server.options)
    rep = lake.ingest([f"s3://{src}/raw/"], rows_per_fragment=3)
    assert (rep.added, rep.failed, rep.skipped_hidden, rep.fragments) == (8, 1, 1, 3)
    assert len(held) == 8 and max(held) <= 3 + ing.CHUNK  # a batch + a chunk, not the corpus
    err = rep.failures[0]
    assert err["path"] == f"s3://{src}/raw/notes.txt"
    assert err["error"] == f"not a media file (text file): s3://{src}/raw/notes.txt"
    assert "sila-ingest" not in json.dumps(rep.to_dict())  # no scratch path anywhere


def test_messages_say_what_went_wrong(lake, tmp_path):
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    w = h = 17_000  # a valid 1-bit PNG that ffmpeg refuses to decode (too many pixels)
    comp = zlib.compressobj(9)
    rows = b"".join(comp.compress(b"\x00" * (1 + (w + 7) // 8)) for _ in range(h)) + comp.flush()
    (tmp_path / "huge.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )  # fmt: skip
    write_wav(tmp_path / "empty.wav", 0)
    (tmp_path / "weird.xyz").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "cut.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 300)
    rep = lake.ingest([tmp_path])  # the lake lives in tmp_path too: not ingested
    assert [s["detail"] for s in rep.skipped] == ["the lake itself"]
    got = {os.path.basename(f["path"]): f for f in rep.failures}
    assert got["huge.png"]["error"].startswith("image too large for ffmpeg: 17000x17000 pixels")
    assert got["empty.wav"]["error"].startswith("empty audio")
    assert got["weird.xyz"]["error"].startswith("not a media file (unrecognised format")
    assert got["cut.mp4"]["error"].startswith("truncated or corrupt")
    for name, f in got.items():
        assert f["error"].endswith(str(tmp_path / name)) and len(f["id"]) == 32
