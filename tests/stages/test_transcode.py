"""`transcode`: cropdetect on the letterboxed demo video, canonical H.264 output, rotation, caps."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
from sila.stages.transcode import Box, Transcode, choose_crop

import sila
from sila.media import output_size, run_ffmpeg

X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-threads", "1", "-pix_fmt", "yuv420p"]


def _ff(*args: str) -> None:
    run_ffmpeg(["-y", *args], timeout=60)


def top_level_boxes(data: bytes) -> list[str]:
    """The ISO-BMFF top-level box types, in file order."""
    kinds, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        kinds.append(data[pos + 4 : pos + 8].decode("latin-1"))
        if size < 8:
            break
        pos += size
    return kinds


def decode_rgb(src) -> list[np.ndarray]:
    with av.open(src) as c:
        return [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]


def make_inputs(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    p = {k: d / k for k in ("odd.mp4", "hfr.mp4", "oneshot.ts")}
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x96:r=25", "-vf", "scale=161:97", "-frames:v", "20",
        *X264[:-2], "-pix_fmt", "yuv444p", str(p["odd.mp4"]))  # fmt: skip
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=60", "-frames:v", "60", *X264, str(p["hfr.mp4"]))
    # one keyframe, no index: input seeking into the middle decodes nothing
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=25", "-frames:v", "75", *X264,
        "-f", "mpegts", str(p["oneshot.ts"]))  # fmt: skip
    return p


@pytest.fixture(scope="module")
def tc_lake(corpus, tmp_path_factory) -> sila.Lake:
    """Demo videos + awkward inputs, split into 1 s windows (no model needed), transcoded once."""
    root = tmp_path_factory.mktemp("transcode")
    extra = make_inputs(root / "extra")
    lake = sila.Lake(root / "lake").init()
    names = ["multishot_a.mp4", "letterboxed.mp4", "rotated.mp4", "static.mp4"]
    lake.ingest([*(corpus[n] for n in names), extra["odd.mp4"], extra["hfr.mp4"]])
    job = lake.run("split", settings={"method": "fixed-stride", "window_s": 1.0, "stride_s": 1.0})
    assert job["state"] == "succeeded"
    job = lake.run("transcode")
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0
    return lake


def clips(lake: sila.Lake) -> list[dict]:
    """Clip rows joined with their source's filename/has_audio, transcoded bytes included."""
    ds = lake.table("clips")
    cols = [n for n in ds.schema.names if n != "video"]
    rows = ds.to_table(columns=cols).to_pylist()
    blobs = ds.take_blobs("video", indices=list(range(len(rows))))
    src = lake.table("sources").to_table(columns=["id", "filename", "has_audio"]).to_pylist()
    by_id = {s["id"]: s for s in src}
    for r, b in zip(rows, blobs, strict=True):
        r["bytes"] = b.readall() if b is not None else None
        r["filename"] = by_id[r["source_id"]]["filename"]
        r["source_has_audio"] = by_id[r["source_id"]]["has_audio"]
    return rows


def test_choose_crop():
    lb = Box(0, 22, 320, 136)
    assert choose_crop([lb] * 5 + [Box(0, 30, 320, 120)] * 2, 320, 180, 0.02) == lb
    assert choose_crop([Box(2, 0, 316, 180)] * 3, 320, 180, 0.02) == Box(0, 0, 320, 180)  # thin
    assert choose_crop([], 320, 180, 0.02) == Box(0, 0, 320, 180)  # all black
    assert choose_crop([Box(140, 80, 40, 20)] * 3, 320, 180, 0.02) == Box(0, 0, 320, 180)  # dark
    mixed = [Box(0, 22, 320, 136), Box(0, 24, 320, 132), Box(0, 30, 320, 120), Box(0, 20, 320, 140)]
    got = choose_crop(mixed, 320, 180, 0.02)  # no majority: wide quantiles, never the tightest
    assert got.y <= 22 and got.y + got.h >= 158


def test_output_size():
    assert output_size(1920, 1080, short_side=720, even=True) == (1280, 720)
    assert output_size(1080, 1920, short_side=720, even=True) == (720, 1280)
    assert output_size(320, 136, short_side=720, even=True) == (320, 136)  # never upscaled
    assert output_size(161, 97, short_side=720, even=True) == (160, 96)  # even
    assert output_size(1000, 1000, short_side=0, even=True) == (1000, 1000)


def test_letterbox_is_cropped(tc_lake):
    (clip,) = [c for c in clips(tc_lake) if c["filename"] == "letterboxed.mp4"]
    x, y, w, h = clip["crop_box"]
    for got, want in zip((x, y, w, h), (0, 22, 320, 136), strict=True):
        assert abs(got - want) <= 2, clip["crop_box"]
    assert (clip["video_width"], clip["video_height"]) == (w, h)


def test_outputs_are_canonical_mp4(tc_lake):
    rows = clips(tc_lake)
    assert len(rows) == 8 and all(r["transcode_error"] is None for r in rows)
    for r in rows:
        data = r["bytes"]
        assert r["video_bytes"] == len(data) > 0
        boxes = top_level_boxes(data)
        assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart
        with av.open(io.BytesIO(data)) as c:
            v = c.streams.video[0]
            assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
            assert (v.codec_context.width, v.codec_context.height) == (
                r["video_width"],
                r["video_height"],
            )
            assert bool(c.streams.audio) == r["source_has_audio"] == r["video_has_audio"]
        assert r["video_width"] % 2 == 0 and r["video_height"] % 2 == 0
        assert r["video_duration_s"] == pytest.approx(r["duration_s"], abs=0.05)
    assert any(r["source_has_audio"] for r in rows) and not all(r["source_has_audio"] for r in rows)


def test_rotation_applied_and_caps(tc_lake):
    rows = clips(tc_lake)
    (rot,) = [r for r in rows if r["filename"] == "rotated.mp4"]
    assert (rot["video_width"], rot["video_height"]) == (180, 320)  # stored 320x180, rotate 90
    assert rot["crop_box"] == [0, 0, 180, 320]
    (odd,) = [r for r in rows if r["filename"] == "odd.mp4"]
    assert (odd["video_width"], odd["video_height"]) == (160, 96)
    (hfr,) = [r for r in rows if r["filename"] == "hfr.mp4"]
    assert hfr["video_fps"] == pytest.approx(30.0) and hfr["video_duration_s"] == pytest.approx(1.0)


def test_cuts_are_frame_accurate(tc_lake, corpus):
    source = decode_rgb(str(corpus["multishot_a.mp4"]))
    rows = sorted(
        (r for r in clips(tc_lake) if r["filename"] == "multishot_a.mp4"),
        key=lambda r: r["start_frame"],
    )
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(0, 25), (25, 50), (50, 70)]
    for r in rows:
        out = decode_rgb(io.BytesIO(r["bytes"]))
        assert len(out) == r["end_frame"] - r["start_frame"]
        nearest = [
            int(np.argmin([np.abs(f - s).mean() for s in source])) for f in (out[0], out[-1])
        ]
        assert nearest == [r["start_frame"], r["end_frame"] - 1]


def test_rerun_is_a_no_op(tc_lake):
    assert tc_lake.run("transcode")["progress"]["rows"] == 0


def _one(path, start: float, end: float, fps: float, **settings) -> dict:
    stage = Transcode(**settings)
    batch = pa.RecordBatch.from_pylist(
        [{"sources.media": str(path), "start_s": start, "end_s": end, "fps": fps}]
    )
    out = stage.compute(batch)
    return {k: v[0] for k, v in out.items()}


def test_seek_falls_back_to_decoding_when_the_container_has_no_index(tmp_path):
    ts = make_inputs(tmp_path)["oneshot.ts"]
    got = _one(ts, 1.2, 2.4, 25.0)
    assert got["transcode_error"] is None
    source, out = decode_rgb(str(ts)), decode_rgb(io.BytesIO(got["video"]))
    assert len(out) == 30
    nearest = [int(np.argmin([np.abs(f - s).mean() for s in source])) for f in (out[0], out[-1])]
    assert nearest == [30, 59]


def test_resolution_cap_and_bad_source(corpus, tmp_path):
    got = _one(corpus["multishot_a.mp4"], 0.0, 0.4, 25.0, max_short_side=90, crop=False)
    assert (got["video_width"], got["video_height"]) == (160, 90)
    assert got["video_has_audio"] is True
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    err = _one(bad, 0.0, 0.4, 25.0)
    assert err["video"] is None and "not a media file" in err["transcode_error"]
    past = _one(corpus["static.mp4"], 5.0, 6.0, 25.0)  # beyond the end of a 1.2 s video
    assert past["video"] is None and "no frame decoded" in past["transcode_error"]


def test_jpeg_sources_become_limited_range(tmp_path):
    """A full-range MJPEG video and a JPEG still (`yuvj420p`) give limited-range yuv420p clips,
    like every other clip: full black (Y 0) comes out at 16, full white (255) at 235."""
    # black in the middle, not at a border (cropdetect would take it for a letterbox)
    pattern = "color=white:s=64x32:r=10,drawbox=x=16:w=32:h=32:color=black:t=fill"
    mjpeg, jpeg = tmp_path / "cam.avi", tmp_path / "still.jpg"
    _ff("-f", "lavfi", "-i", pattern, "-frames:v", "10", "-c:v", "mjpeg", "-q:v", "2",
        "-pix_fmt", "yuvj420p", str(mjpeg))  # fmt: skip
    _ff("-f", "lavfi", "-i", pattern, "-frames:v", "1", "-pix_fmt", "yuvj420p", str(jpeg))
    with av.open(str(mjpeg)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuvj420p"
    video = _one(mjpeg, 0.0, 1.0, 10.0)
    row = {"sources.media": str(jpeg), "clip_kind": "image", "start_s": 0.0, "end_s": 0.0}
    still = Transcode().compute(pa.RecordBatch.from_pylist([{**row, "fps": None}]))
    for got in (video, {k: v[0] for k, v in still.items()}):
        assert got["transcode_error"] is None
        with av.open(io.BytesIO(got["video"])) as c:
            cc = c.streams.video[0].codec_context
            assert (cc.pix_fmt, cc.color_range) == ("yuv420p", 1)  # AVCOL_RANGE_MPEG
            luma = next(c.decode(video=0)).to_ndarray()[:32]  # the Y plane
        assert 12 <= luma[:, 20:44].mean() <= 20 and 228 <= luma[:, 2:12].mean() <= 240
