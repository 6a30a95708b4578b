"""Re-splitting with other settings replaces a source's clips in one commit (issue 17, item 12):
split -> transcode -> split --recompute (other windows) -> sources and clips agree, unchanged
clips keep their id and transcode outputs, no clip of the abandoned split is left."""

from __future__ import annotations

import pytest
from sila.stages.split import Split

import sila

FIRST = {"method": "fixed-stride", "window_s": 1.0, "stride_s": 1.0}  # 0-25, 25-50, 50-70
SECOND = {"method": "fixed-stride", "window_s": 1.0, "stride_s": 0.2}  # 0-25, 5-30, ... 45-70


def clip_rows(lake: sila.Lake) -> dict[str, dict]:
    ds = lake.table("clips")
    cols = [n for n in ds.schema.names if n != "video"]
    return {r["id"]: r for r in ds.to_table(columns=cols).to_pylist()}


def agree(lake: sila.Lake) -> None:
    """Every source's clip count is what `clips` holds for it; no id twice."""
    ds = lake.table("clips")
    ids = ds.to_table(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids))
    counts = lake.sql(
        "select s.id, s.split_clip_count n, count(c.id) got from sources s "
        "left join clips c on c.source_id = s.id where s.ingest_error is null group by s.id, n"
    ).to_pylist()
    for r in counts:
        assert r["n"] == r["got"], r


@pytest.fixture
def small_fragments(monkeypatch):
    monkeypatch.setattr(Split, "child_rows_per_fragment", 4)


def test_resplit_replaces_clips_and_keeps_unchanged_ones(corpus, tmp_path, small_fragments):
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([corpus["multishot_a.mp4"], corpus["image_bars.png"]])
    assert lake.run("split", settings=FIRST)["state"] == "succeeded"
    first = clip_rows(lake)
    video = [c for c in first.values() if c["clip_kind"] == "video"]
    assert sorted((c["start_frame"], c["end_frame"]) for c in video) == [
        (0, 25),
        (25, 50),
        (50, 70),
    ]
    assert all(f.count_rows() <= 4 for f in lake.table("clips").get_fragments())  # bounded
    tc = lake.run("transcode")
    assert tc["state"] == "succeeded" and tc["progress"]["row_errors"] == 0
    before = clip_rows(lake)

    job = lake.run("split", settings=SECOND, recompute=True)
    assert job["state"] == "succeeded", job
    agree(lake)
    after = clip_rows(lake)
    src = next(c["source_id"] for c in video)
    want = {f"{src}/{a}-{a + 25}" for a in range(0, 50, 5)}  # the last is 45-70
    assert {i for i, c in after.items() if c["clip_kind"] == "video"} == want
    kept = {f"{src}/0-25", f"{src}/25-50"} | {
        i for i, c in before.items() if c["clip_kind"] != "video"
    }
    assert kept <= set(after) and f"{src}/50-70" not in after  # abandoned clip gone
    for cid in kept:  # unchanged bounds: same row, transcode outputs kept, index updated
        assert after[cid]["transcode_error"] is None and after[cid]["video_bytes"]
        assert after[cid]["video_bytes"] == before[cid]["video_bytes"]
        assert after[cid]["crop_box"] == before[cid]["crop_box"]
    assert after[f"{src}/25-50"]["clip_index"] == 5  # its place in the new split
    order = sorted(
        (c for c in after.values() if c["source_id"] == src), key=lambda c: c["start_frame"]
    )
    assert [c["clip_index"] for c in order] == list(range(len(order)))
    new = set(after) - kept
    assert all(after[i]["video_bytes"] is None for i in new)
    again = lake.run("transcode")  # only the new clips are computed
    assert again["state"] == "succeeded" and again["progress"]["rows"] == len(new)
    final = clip_rows(lake)
    assert all(c["transcode_error"] is None and c["video_bytes"] for c in final.values())
    for cid in kept:
        assert final[cid]["video_bytes"] == before[cid]["video_bytes"]

    back = lake.run("split", settings=FIRST, recompute=True)  # and back: 50-70 is new again
    assert back["state"] == "succeeded" and back["progress"]["children"] == 1
    agree(lake)
    last = clip_rows(lake)
    assert {i for i, c in last.items() if c["source_id"] == src} == {
        f"{src}/0-25",
        f"{src}/25-50",
        f"{src}/50-70",
    }
    assert last[f"{src}/25-50"]["video_bytes"] == before[f"{src}/25-50"]["video_bytes"]
    assert last[f"{src}/50-70"]["video_bytes"] is None


def test_a_source_that_now_gives_no_clip_loses_its_old_ones(corpus, backend_lake):
    lake = backend_lake  # local and S3 (moto): the replacing commit goes through the store
    lake.ingest([corpus["multishot_a.mp4"], corpus["static.mp4"]])
    assert lake.run("split", settings=FIRST)["state"] == "succeeded"
    assert len(clip_rows(lake)) == 3 + 1  # static.mp4 is 1.2 s: one window
    again = lake.run("split", settings=SECOND, recompute=True)
    assert again["state"] == "succeeded"
    agree(lake)
    longer = {**FIRST, "window_s": 10.0, "stride_s": 10.0, "min_clip_s": 5.0}  # 2.8 s video
    job = lake.run("split", settings=longer, recompute=True)
    assert job["state"] == "succeeded"
    assert clip_rows(lake) == {}
    agree(lake)
    assert lake.run("split", settings=FIRST, recompute=True)["progress"]["children"] == 4


@pytest.mark.slow
def test_two_workers_replace_children_concurrently(corpus, tmp_path):
    """Workers commit their fragments' children at the same time: every commit lands."""
    lake = sila.Lake(tmp_path / "lake").init()
    names = ["multishot_a.mp4", "multishot_b.mp4", "static.mp4", "letterboxed.mp4"]
    lake.ingest([corpus[n] for n in names], rows_per_fragment=1)
    assert len(lake.table("sources").get_fragments()) == 4
    for settings, recompute in ((FIRST, False), (SECOND, True)):
        job = lake.run("split", settings=settings, recompute=recompute, workers=2)
        assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0, job
        agree(lake)
    assert len(clip_rows(lake)) == sum(
        r["split_clip_count"] for r in lake.sql("select split_clip_count from sources").to_pylist()
    )


def test_children_without_a_parent_column_are_added_once(tmp_path):
    """A user's explode stage whose children name no parent: re-runs add nothing twice."""
    import pyarrow as pa
    from sila.coordinator.children import append_children

    class Words(sila.Stage):
        name, version, child_table, kind = "words", "1", "words", "explode"
        outputs = [pa.field("words_done", pa.bool_())]
        child_fields = [pa.field("id", pa.string()), pa.field("n", pa.int64())]

    lake = sila.Lake(tmp_path / "lake").init()
    kids = pa.table({"id": ["a", "b"], "n": [1, 2]})
    assert append_children(lake, Words, kids) == 2
    assert append_children(lake, Words, pa.table({"id": ["b", "c"], "n": [2, 3]})) == 1
    assert sorted(lake.table("words").to_table().column("id").to_pylist()) == ["a", "b", "c"]
