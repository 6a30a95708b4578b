"""`caption` against a REAL vLLM server (a VLM such as Qwen3-VL-8B), gated on SILA_TEST_VLLM_URL:

    vllm serve Qwen/Qwen3-VL-8B-Instruct --port 8000 --limit-mm-per-prompt '{"image": 16}'
    SILA_TEST_VLLM_URL=http://127.0.0.1:8000/v1 pytest -m vllm tests/stages/test_caption_vllm.py

Real structured outputs (response_format json_schema), real frames: every row must be
schema-valid JSON or a row error, and most rows valid; the figures are printed.
"""

from __future__ import annotations

import json
import os

import jsonschema
import pytest
from sila.stages.caption.schema import image_schema, video_schema
from sila.stages.caption.stage import Caption

from tests.stages.caption_helpers import make_media, write_clips

URL = os.environ.get("SILA_TEST_VLLM_URL")
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not URL, reason="set SILA_TEST_VLLM_URL=http://HOST:PORT/v1 (vllm serve)"),
]


@pytest.mark.parametrize("quadrant_scan", [False, True])
def test_real_vllm_captions_are_schema_valid(lake, tmp_path, quadrant_scan):
    media = make_media(tmp_path / "media", n_videos=3, size="320x240")
    write_clips(lake, [media["v0"], media["v1"], media["v2"], media["still"]])
    settings = {"fps": 4.0, "max_frames": 4, "concurrency": 8, "quadrant_scan": quadrant_scan,
                "max_tokens": 3072, "timeout_s": 600.0}  # fmt: skip
    job = lake.run(Caption, endpoint_url=URL, settings=settings)
    assert job["state"] == "succeeded"
    rows = lake.table("clips").to_table().to_pylist()
    ok = 0
    for r in rows:
        if r["caption_error"] is None:
            value = json.loads(r["caption_json"])
            jsonschema.validate(value, video_schema() if "segments" in value else image_schema())
            ok += 1
            print(r["id"], r["caption_model"], r["caption_output_tokens"], "tokens",
                  f"{r['caption_latency_s']:.1f} s", r["caption_text"][:200])  # fmt: skip
        else:
            print(r["id"], "ERROR", r["caption_error"][:300])
    assert ok >= 3, "most rows should caption with a real model"
