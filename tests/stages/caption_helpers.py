"""Shared pieces of the caption tests and benchmarks: small clips tables, the OpenAI test double
(tests/openai_test_server.py, a TEST DOUBLE: no model) served in a thread over real HTTP."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import lance
import pyarrow as pa
import requests

from sila.media import run_ffmpeg
from sila.schema import blob_field, owned
from tests.openai_test_server import serve

MODEL = "caption-test-double"


def make_media(folder: Path, n_videos: int = 3, size: str = "96x64") -> dict[str, bytes]:
    """`n_videos` distinct 1 s clips (12 fps), a PNG still and bytes that are no video."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    sources = ["testsrc2", "smptebars", "rgbtestsrc", "testsrc", "yuvtestsrc", "smptehdbars"]
    for i in range(n_videos):
        p = folder / f"v{i}.mp4"
        src = sources[i % len(sources)]
        run_ffmpeg(
            ["-y", "-f", "lavfi", "-i", f"{src}=s={size}:r=12", "-frames:v", "12",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(p)],
            timeout=60,
        )  # fmt: skip
        out[f"v{i}"] = p.read_bytes()
    still = folder / "still.png"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", f"testsrc2=s={size}", "-frames:v", "1", str(still)])
    out["still"] = still.read_bytes()
    out["broken"] = b"this is not a video at all" * 10
    return out


def write_clips(
    lake,
    videos: list[bytes | None],
    keep: dict[str, list[bool | None]] | None = None,
    rows_per_fragment: int = 64,
) -> lance.LanceDataset:
    """A `clips` table: id, `video` blob (owned by transcode) and optional filter decisions
    `<filter>_keep` owned by that filter, as the real stages would leave them."""
    n = len(videos)
    fields = [pa.field("id", pa.string())]
    fields += owned([blob_field("video")], "transcode", "1")
    cols = {"id": [f"clip{i:04d}" for i in range(n)], "video": videos}
    for name, values in (keep or {}).items():
        fields += owned([pa.field(name, pa.bool_())], name.removesuffix("_keep"), "1")
        cols[name] = values
    tbl = pa.table(cols, schema=pa.schema(fields))
    return lance.write_dataset(tbl, lake.table_uri("clips"), max_rows_per_file=rows_per_fragment)


@contextlib.contextmanager
def openai_double(**behaviour) -> Iterator[tuple[str, object]]:
    """The OpenAI TEST DOUBLE on a free port in this process: (base URL, its live State)."""
    server = serve(0, MODEL, **behaviour)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", server.RequestHandlerClass.state
    finally:
        server.shutdown()
        server.server_close()


def stats(url: str) -> dict:
    return requests.get(url.removesuffix("/v1") + "/stats", timeout=5).json()
