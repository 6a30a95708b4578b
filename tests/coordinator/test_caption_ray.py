"""`caption` on the Ray executor (the session's two-node cluster): frames decoded in the
preprocess pool, requests from the compute pool to the OpenAI TEST DOUBLE, the gate resolved
in the driver; the same table as inline."""

from __future__ import annotations

import json

import pytest
from sila.stages.caption.stage import Caption

import sila
from tests.stages.caption_helpers import make_media, openai_double, stats, write_clips

pytestmark = pytest.mark.slow
SETTINGS = {"fps": 2.0, "max_frames": 2, "frame_max_side": 64, "temperature": 0.0}


def test_caption_on_ray_matches_inline(tmp_path, ray_cluster):
    media = make_media(tmp_path / "media")
    quality = [True, False, True, None, True, True, True]
    videos = [media["v0"], media["v1"], media["v2"]] * 2 + [media["still"]]
    lakes = {}
    with openai_double() as (url, _):
        for executor in ("ray", "inline"):
            lake = sila.Lake(tmp_path / executor).init()
            write_clips(lake, videos, keep={"quality_keep": quality}, rows_per_fragment=3)
            job = lake.run(Caption, executor=executor, endpoint_url=url, settings=SETTINGS)
            assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0
            assert job["metrics"]["gating"]["rows_gated"] == 1
            lakes[executor] = lake
        assert stats(url)["chats"] == 2 * 6  # the rejected row was never sent, on either

    def table(lake):
        cols = ["id", "caption_json", "caption_frames", "caption_error"]
        return sorted(lake.table("clips").to_table(columns=cols).to_pylist(), key=lambda r: r["id"])

    ray_rows, inline_rows = table(lakes["ray"]), table(lakes["inline"])
    assert ray_rows == inline_rows
    assert [r["caption_json"] is None for r in ray_rows] == [q is False for q in quality]
    assert all(json.loads(r["caption_json"]) for r in ray_rows if r["caption_json"])
