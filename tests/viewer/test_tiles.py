"""Clip tiles show the clip itself (a frame decoded from its own video), with keep / reason
badges; the sample page starts with the verdict; the samples page filters to row errors."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from sila.media import frame_at
from tests.viewer.test_pages import page, texts


def _pixels(jpeg: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    return np.asarray(im.resize(size) if size else im, dtype=np.float32)


def test_a_clip_tile_is_decoded_from_that_clip(view_env, tmp_path):
    from sila.viewer import tiles as viewer_tiles

    clips = view_env.table("clips")
    page_rows = clips.to_table(
        columns=["id", "source_id", "duration_s"],
        filter="clip_kind = 'video'",
        with_row_id=True,
        limit=8,
    )
    tiles = viewer_tiles.thumbnails_for("clips", page_rows)
    src = {
        r["id"]: r["thumbnail"]
        for r in view_env.table("sources").to_table(columns=["id", "thumbnail"]).to_pylist()
    }
    differs_from_source = 0
    for rec, tile in zip(page_rows.to_pylist(), tiles, strict=True):
        assert tile, rec["id"]
        video = clips.take_blobs("video", ids=[rec["_rowid"]])[0].readall()
        path = tmp_path / "clip.mp4"
        path.write_bytes(video)
        want = frame_at(str(path), rec["duration_s"] / 2).astype(np.float32)
        got = _pixels(tile, (want.shape[1], want.shape[0]))
        assert np.abs(got - want).mean() < 12, rec["id"]  # the clip's own middle frame
        theirs = _pixels(src[rec["source_id"]], (want.shape[1], want.shape[0]))
        differs_from_source += np.abs(theirs - want).mean() > 12
    assert differs_from_source >= 1  # a source thumbnail would have shown another picture


def test_tiles_carry_badges_and_the_sample_page_starts_with_the_verdict(view_env):
    at = page("samples.py")
    badges = " ".join(str(m.value) for m in at.markdown)
    assert ":red-badge[quality: low_score, short]" in badges
    assert ":red-badge[dedup: duplicate]" in badges
    from sila.viewer.components import tile_badges

    kept = {"quality_keep": True, "dedup_keep": True, "transcode_error": None}
    assert tile_badges(kept) == ":green-badge[kept]"
    assert tile_badges({**kept, "dedup_keep": None}) == ":gray-badge[undecided]"
    bad = view_env.table("clips").to_table(filter="quality_keep = false", limit=1).to_pylist()[0]
    at = page("sample.py", table="clips", id=bad["id"])
    first = at.main.children[0] if hasattr(at.main, "children") else None
    assert first is not None
    assert str(at.error[0].value).startswith("REJECTED by **quality**: low_score, short")
    assert f"sila explain {bad['id']}" in texts(at)


def test_samples_errors_only(view_env):
    at = page("samples.py", table="sources")
    at.checkbox(key="errors_sources").check().run()
    assert not at.exception
    n = view_env.table("sources").count_rows(filter="ingest_error IS NOT NULL")
    assert n >= 1 and f"of {n:,} matching" in texts(at)
    assert ":orange-badge[error: ingest]" in " ".join(str(m.value) for m in at.markdown)
