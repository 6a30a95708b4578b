"""One lake of generated filter cases, built once per test session through the real pipeline:
ingest -> split (one window per file) -> transcode -> video_signals / audio_signals -> quality / audio.
"""

from __future__ import annotations

import functools
from pathlib import Path

import sila
from sila.filter_cases import make_audio_cases, make_no_audio, make_video_cases

FAST = {"ocr_frames": 1}


@functools.cache
def build(root: str) -> tuple[sila.Lake, dict[str, str]]:
    """(lake, {case name: clip id}); cached so every test module shares one lake."""
    base = Path(root)
    media = base / "media"
    paths = {
        **make_video_cases(media),
        **{f"audio_{k}": v for k, v in make_audio_cases(media).items()},
    }
    paths["audio_no_track"] = make_no_audio(media)
    lake = sila.Lake(base / "lake").init()
    rep = lake.ingest(list(paths.values()))
    assert rep.failed == 0
    split = {"method": "fixed-stride", "window_s": 10.0, "stride_s": 10.0}
    for stage, settings in (
        ("split", split),
        ("transcode", {}),
        ("video_signals", FAST),
        ("audio_signals", {}),
        ("quality", {}),
        ("audio", {}),
    ):
        job = lake.run(stage, settings=settings)
        assert job["state"] == "succeeded", job
    names = {p.name: k for k, p in paths.items()}
    src = lake.table("sources").to_table(columns=["id", "filename"]).to_pylist()
    by_src = {s["id"]: names[s["filename"]] for s in src}
    clips = lake.table("clips").to_table(columns=["id", "source_id"]).to_pylist()
    ids = {by_src[c["source_id"]]: c["id"] for c in clips}
    assert len(ids) == len(paths), "one clip per generated file"
    return lake, ids


def rows(lake: sila.Lake, columns: list[str]) -> dict[str, dict]:
    tbl = lake.table("clips").to_table(columns=["id", *columns]).to_pylist()
    return {r["id"]: r for r in tbl}
