"""One generated lake for the viewer tests: the demo pipeline (ingest, thumbnail, split,
transcode: real ffmpeg, real clips), the curation test stages, a later ingest left pending,
and a live lease."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sila
from sila.media import run_ffmpeg

HERE = Path(__file__).parent


VIEW_FILES = ("multishot_b.mp4", "letterboxed.mp4", "image_photo.jpg", "tone.wav", "corrupt.mp4")


@pytest.fixture(scope="session")
def view_lake(tmp_path_factory, corpus) -> sila.Lake:
    """Real ingest, thumbnail, split (fixed-stride windows: no model needed) and transcode of
    a few corpus files, the curation test stages, then a later ingest left pending."""
    root = tmp_path_factory.mktemp("view")
    lake = sila.Lake(root / "lake").init()
    assert lake.ingest([corpus[n] for n in VIEW_FILES]).added == len(VIEW_FILES)
    stages = HERE / "curation_stages.py"
    split = {"method": "fixed-stride", "window_s": 0.8, "stride_s": 0.8}
    for spec, settings in [
        ("thumbnail", None),
        ("split", split),
        ("transcode", None),
        (f"{stages}:Quality", None),
        (f"{stages}:Dedup", None),
    ]:
        job = lake.run(spec, settings=settings)
        assert job["state"] == "succeeded", job
    late = root / "late.png"  # arrives after the stages ran: a pending fragment
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=96x64", "-frames:v", "1", "-y", str(late)])
    assert lake.ingest([late]).added == 1
    return lake


@pytest.fixture(scope="session")
def live_lease(view_lake):
    """A lease held by a (pretend) worker, as `sila run` writes it mid-job."""
    from sila.coordinator.discovery import fragment_ref
    from sila.coordinator.leases import LeaseStore

    ds = view_lake.table("sources")
    frag = fragment_ref(ds.get_fragments()[-1])
    leases = LeaseStore(view_lake.store, ttl=3600)
    lease = leases.acquire("sources", "thumbnail", frag.key, owner="test-worker", job="job-x")
    assert lease is not None
    yield lease
    leases.release(lease)


@pytest.fixture
def view_env(view_lake, monkeypatch):
    monkeypatch.setenv("SILA_VIEW_LAKE", view_lake.uri)
    return view_lake


def lake_files(lake: sila.Lake) -> dict[str, tuple[int, int]]:
    """Every file of the lake with its size and mtime: a viewer must leave all unchanged."""
    out = {}
    for dirpath, _, files in os.walk(lake.uri):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            out[os.path.relpath(p, lake.uri)] = (st.st_size, st.st_mtime_ns)
    return out
