"""The gate holds in a concurrent pipeline: the captioner (against the counting OpenAI TEST
DOUBLE, no model) runs beside two filters slower than it and sends 0 requests for rows any
gating decision rejects; its job records count the model calls the gate saved."""

from __future__ import annotations

import os

import pytest
from sila.coordinator.ops.pipeline import plan, plan_pipeline, run_pipeline

from tests.stages.caption_helpers import make_media, openai_double, stats, write_clips

FILTERS = """
import os, time
import pyarrow as pa
import sila

def slow():
    return float(os.environ.get("GATE_SLOW", "0"))  # read per batch: set after import

class Sharp(sila.Stage):  # rejects every third clip
    name = "sharp"; table = "clips"; inputs = ["id"]; version = "1"; segment_rows = 2
    outputs = [pa.field("sharp_keep", pa.bool_())]
    def compute(self, batch):
        time.sleep(slow())
        return {"sharp_keep": [int(i[-4:]) % 3 != 0 for i in batch["id"].to_pylist()]}

class Loud(sila.Stage):  # rejects every fourth clip
    name = "loud"; table = "clips"; inputs = ["id"]; version = "1"; segment_rows = 2
    outputs = [pa.field("loud_keep", pa.bool_())]
    def compute(self, batch):
        time.sleep(slow() * 1.5)
        return {"loud_keep": [int(i[-4:]) % 4 != 1 for i in batch["id"].to_pylist()]}
"""


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, bytes]:
    return make_media(tmp_path_factory.mktemp("gate-media"), n_videos=2)


def test_no_request_for_a_row_any_gate_rejects(lake, media, tmp_path):
    code = tmp_path / "filters.py"
    code.write_text(FILTERS)
    recipe = tmp_path / "gate.toml"
    recipe.write_text(
        f'[pipeline]\nstages = ["caption", "{code}:Sharp", "{code}:Loud"]\n'
        "[stages.caption]\nfps = 4.0\nmax_frames = 2\nframe_max_side = 64\nconcurrency = 4\n"
    )
    n = 12
    write_clips(lake, [media[f"v{i % 2}"] for i in range(n)], rows_per_fragment=2)
    order = [x.name for x in plan(["caption", f"{code}:Sharp", f"{code}:Loud"])]
    assert order.index("caption") > max(order.index("sharp"), order.index("loud"))
    rows = [f"clip{i:04d}" for i in range(n)]
    rejected = {r for r in rows if int(r[-4:]) % 3 == 0 or int(r[-4:]) % 4 == 1}
    with openai_double() as (url, _):
        dry = {r["stage"]: r for r in plan_pipeline(lake, str(recipe))["stages"]}
        assert dry["caption"]["start"] == "overlaps upstream"
        os.environ["GATE_SLOW"] = "0.4"  # filters slower than the captioner
        try:
            res = run_pipeline(lake, str(recipe), endpoint_url=url, poll_s=0.1)
        finally:
            os.environ.pop("GATE_SLOW")
        assert res["ok"], res
        chats = stats(url)["chats"]
    got = {r["id"]: r for r in lake.table("clips").to_table().to_pylist()}
    captioned = {i for i, r in got.items() if r["caption_json"] is not None}
    assert captioned == set(rows) - rejected
    assert chats == len(captioned)  # 0 requests for a rejected row, 1 per kept row
    by = {s["stage"]: s for s in res["stages"]}
    assert by["caption"]["model_calls_saved"] == len(rejected)
    jobs = {j["job"]: j for j in lake.jobs()}
    loud_end = max(jobs[j]["ended_at"] for j in by["loud"]["jobs"])
    assert min(jobs[j]["started_at"] for j in by["caption"]["jobs"]) < loud_end  # overlapped
