"""Odd real-world media through thumbnail, split and transcode (issue 18, "Right results"):
interlaced, variable frame rate, 1000 fps, two video streams with the default disposition on the
second, a 1-pixel-wide picture, audio outlasting video; images and audio files become clips."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
from sila.stages.transcode import Transcode

import sila
from sila.media import output_size, run_ffmpeg
from sila.media.streams import read_streams

FAST = ["-c:v", "libx264", "-preset", "ultrafast", "-threads", "1"]


def _ff(*args: str) -> None:
    run_ffmpeg(["-y", *args], timeout=60)


def make_odd_media(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    p = {
        k: d / k
        for k in (
            "interlaced.mp4", "vfr.mp4", "fast1000.mp4", "two_streams.mp4", "onepx.mp4",
            "long_audio.mp4", "still.png", "tone.m4a", "cut_short.mp4",
        )
    }  # fmt: skip
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x120:r=50", "-t", "2",
        "-vf", "tinterlace=interleave_top,fieldorder=tff", "-flags", "+ilme+ildct",
        *FAST, "-x264-params", "tff=1", str(p["interlaced.mp4"]))  # fmt: skip
    # 30 frames at 30 fps, then every third frame (10 fps): timestamps are irregular
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=30", "-vf", "select='lt(n\\,30)+not(mod(n\\,3))'",
        "-fps_mode", "vfr", "-frames:v", "50", *FAST, "-pix_fmt", "yuv420p", str(p["vfr.mp4"]))  # fmt: skip
    _ff("-f", "lavfi", "-i", "testsrc2=s=64x36:r=1000", "-t", "1", *FAST, str(p["fast1000.mp4"]))
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=25", "-f", "lavfi", "-i", "testsrc=s=64x48:r=10",
        "-t", "2", "-map", "0", "-map", "1", "-disposition:v:0", "0",
        "-disposition:v:1", "default", *FAST, str(p["two_streams.mp4"]))  # fmt: skip
    _ff("-f", "lavfi", "-i", "testsrc2=s=2x64:r=25", "-t", "1", "-vf", "format=yuv444p,crop=1:64:0:0",
        *FAST, "-pix_fmt", "yuv444p", str(p["onepx.mp4"]))  # fmt: skip
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=25:d=2", "-f", "lavfi", "-i", "sine=d=6",
        "-map", "0:v", "-map", "1:a", *FAST, "-c:a", "aac", str(p["long_audio.mp4"]))  # fmt: skip
    _ff("-f", "lavfi", "-i", "testsrc2=s=96x64", "-frames:v", "1", str(p["still.png"]))
    _ff("-f", "lavfi", "-i", "sine=f=330:d=2.5", "-c:a", "aac", str(p["tone.m4a"]))
    whole = d / "whole.mp4"  # moov first, media data cut: probes fine, the end is missing
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=25", "-t", "3", *FAST, "-movflags", "+faststart",
        str(whole))  # fmt: skip
    data = whole.read_bytes()
    p["cut_short.mp4"].write_bytes(data[: len(data) // 3])
    whole.unlink()
    return p


@pytest.fixture(scope="module")
def odd_lake(tmp_path_factory) -> tuple[sila.Lake, dict[str, Path]]:
    root = tmp_path_factory.mktemp("odd")
    files = make_odd_media(root / "media")
    lake = sila.Lake(root / "lake").init()
    lake.ingest(list(files.values()))
    for stage, settings in (
        ("thumbnail", {}),
        ("split", {"method": "fixed-stride", "window_s": 0.5, "stride_s": 0.5}),
        ("transcode", {}),
    ):
        job = lake.run(stage, settings=settings)
        assert job["state"] == "succeeded", job
    return lake, files


def sources(lake: sila.Lake) -> dict[str, dict]:
    ds = lake.table("sources")
    rows = ds.to_table(columns=[n for n in ds.schema.names if n != "media"]).to_pylist()
    return {r["filename"]: r for r in rows}


def clips_by_file(lake: sila.Lake) -> dict[str, list[dict]]:
    names = {r["id"]: name for name, r in sources(lake).items()}
    ds = lake.table("clips")
    rows = ds.to_table(columns=[n for n in ds.schema.names if n != "video"]).to_pylist()
    blobs = ds.take_blobs("video", indices=list(range(len(rows))))
    out: dict[str, list[dict]] = {}
    for r, b in zip(rows, blobs, strict=True):
        r["bytes"] = b.readall() if b is not None and b.size() else None
        out.setdefault(names[r["source_id"]], []).append(r)
    return {k: sorted(v, key=lambda r: r["start_frame"]) for k, v in out.items()}


def jpeg_size(data: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(data)) as c:
        f = next(c.decode(video=0))
        return f.width, f.height


def frame_times(data: bytes) -> list[float]:
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.pts is not None)


def test_no_stage_error_on_odd_media(odd_lake):
    lake, _ = odd_lake
    for name, row in sources(lake).items():
        if name == "cut_short.mp4":
            continue
        assert row["ingest_error"] is None, name
        assert row["split_error"] is None, (name, row["split_error"])
        if row["media_kind"] != "audio":
            assert row["thumbnail_error"] is None, (name, row["thumbnail_error"])
    for name, clips in clips_by_file(lake).items():
        for c in clips:
            if name == "cut_short.mp4":
                continue
            assert c["transcode_error"] is None, (name, c["transcode_error"])
            assert c["bytes"] and c["video_bytes"] == len(c["bytes"])


def test_every_sample_is_a_clip(odd_lake):
    lake, files = odd_lake
    clips = clips_by_file(lake)
    (img,) = clips["still.png"]
    assert (img["clip_kind"], img["start_frame"], img["end_frame"]) == ("image", 0, 1)
    assert img["duration_s"] == 0.0 and (img["width"], img["height"]) == (96, 64)
    assert img["video_frames"] == 1 and (img["video_width"], img["video_height"]) == (96, 64)
    with av.open(io.BytesIO(img["bytes"])) as c:  # a one-frame H.264 mp4: decodes like a clip
        assert c.streams.video[0].codec_context.name == "h264"
        assert len(list(c.decode(video=0))) == 1
    (aud,) = clips["tone.m4a"]
    assert aud["clip_kind"] == "audio" and aud["fps"] is None
    assert aud["end_frame"] == round(aud["duration_s"] * aud["sample_rate"])
    assert aud["duration_s"] == pytest.approx(2.5, abs=0.05)
    assert aud["video_width"] is None and aud["video_has_audio"] is True
    with av.open(io.BytesIO(aud["bytes"])) as c:
        assert not c.streams.video and c.streams.audio[0].codec_context.name == "aac"
        assert float(c.duration / 1e6) == pytest.approx(2.5, abs=0.1)
    assert all(c["clip_kind"] == "video" for c in clips["vfr.mp4"])


def test_1000_fps_is_analysed_on_a_decimated_grid(odd_lake):
    lake, _ = odd_lake
    src = sources(lake)["fast1000.mp4"]
    assert src["split_error"] is None
    assert 30 <= src["split_analysis_fps"] <= 60 and src["split_frames"] < 70
    clips = clips_by_file(lake)["fast1000.mp4"]
    # bounds and ids in the source's own frame numbers; the analysed shot covers all 1000
    assert src["split_shots"] == [{"start_frame": 0, "end_frame": 1000}]
    step = round(1000 / src["split_analysis_fps"])
    assert clips[0]["start_frame"] == 0 and clips[0]["fps"] == 1000.0 and len(clips) >= 2
    assert all(c["start_frame"] % step == 0 and c["end_frame"] > c["start_frame"] for c in clips)
    for c in clips:
        assert c["id"] == f"{src['id']}/{c['start_frame']}-{c['end_frame']}"
        assert c["video_fps"] == pytest.approx(30.0)  # transcode's cap


def test_interlaced_source_is_deinterlaced(odd_lake):
    lake, files = odd_lake
    assert read_streams(str(files["interlaced.mp4"])).interlaced
    clips = clips_by_file(lake)
    for c in clips["interlaced.mp4"]:
        assert c["video_deinterlaced"] is True
    assert all(c["video_deinterlaced"] is False for c in clips["vfr.mp4"])
    out = Path(lake.uri) / "out.mp4"
    out.write_bytes(clips["interlaced.mp4"][0]["bytes"])
    assert read_streams(str(out)).field_order == "progressive"


def test_variable_frame_rate_becomes_constant(odd_lake):
    lake, files = odd_lake
    src_gaps = np.diff(frame_times(files["vfr.mp4"].read_bytes()))
    assert src_gaps.max() > 2 * src_gaps.min()  # the source really is variable
    for c in clips_by_file(lake)["vfr.mp4"]:
        gaps = np.diff(frame_times(c["bytes"]))
        assert np.allclose(gaps, 1 / c["video_fps"], atol=1e-3), (c["id"], gaps)
        assert len(gaps) + 1 == round(c["duration_s"] * c["video_fps"])


def test_default_disposition_stream_is_used(odd_lake):
    lake, _ = odd_lake
    src = sources(lake)["two_streams.mp4"]
    assert jpeg_size(src["thumbnail"]) == (64, 48)
    clips = clips_by_file(lake)["two_streams.mp4"]
    assert {(c["width"], c["height"], c["fps"]) for c in clips} == {(64, 48, 10.0)}
    assert clips[-1]["end_frame"] == 20  # 2 s at 10 fps: the default stream's own frames
    assert {(c["video_width"], c["video_height"]) for c in clips} == {(64, 48)}


def test_one_pixel_wide_never_rounds_to_zero(odd_lake):
    lake, files = odd_lake
    assert output_size(1, 64, max_side=384) == (1, 64)
    assert output_size(1, 4000, max_side=384) == (1, 384)
    src = sources(lake)["onepx.mp4"]
    assert jpeg_size(src["thumbnail"]) == (1, 64)
    with av.open(str(files["onepx.mp4"])) as c:
        source = next(c.decode(video=0)).to_ndarray(format="gray")[:, 0].astype(int)
    for c in clips_by_file(lake)["onepx.mp4"]:
        assert (c["width"], c["height"]) == (1, 64)
        # the encoder wants even sides: one black column is added, the picture not stretched
        assert (c["video_width"], c["video_height"]) == (2, 64)
        with av.open(io.BytesIO(c["bytes"])) as v:
            luma = next(v.decode(video=0)).to_ndarray()[:64].astype(int)  # the Y plane
        assert luma[:, 1].mean() < 24  # black (limited range), give or take the encoder's ringing
        assert luma[:, 0].std() > 10  # the picture's own column, not stretched, not lost
        if c["start_frame"] == 0:
            assert np.corrcoef(luma[:, 0], source)[0, 1] > 0.9


def test_thumbnail_time_is_inside_the_video_stream(odd_lake):
    lake, files = odd_lake
    src = sources(lake)["long_audio.mp4"]
    assert src["duration_s"] > 4  # the container lasts as long as its audio
    assert src["thumbnail_ts"] == pytest.approx(2 / 3, abs=0.05)  # a third of the 2 s video
    assert src["thumbnail"]
    assert src["split_shots"][-1]["end_frame"] == 50  # 2 s at 25 fps, not the 6 s of audio
    assert clips_by_file(lake)["long_audio.mp4"][-1]["end_s"] <= 2.0


def test_errors_name_the_source_and_the_users_path(tmp_path):
    bad = tmp_path / "copy-in-scratch.bin"  # what a stage is handed: a scratch copy
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)  # an mp4 without its moov
    batch = pa.RecordBatch.from_pylist([{
        "sources.media": str(bad), "sources.uri": "/data/my videos/cam1.mp4", "source_id": "abc",
        "clip_kind": "video", "start_s": 0.0, "end_s": 1.0, "fps": 25.0,
    }])  # fmt: skip
    err = Transcode().compute(batch)["transcode_error"][0]
    assert "/data/my videos/cam1.mp4" in err and "abc" in err and str(bad) not in err


def test_a_broken_file_is_reported_under_its_own_path(odd_lake):
    lake, files = odd_lake
    src = sources(lake)["cut_short.mp4"]
    user_path = str(files["cut_short.mp4"])
    said = [src["split_warning"], src["split_error"], src["thumbnail_error"]]
    said += [c["transcode_error"] for c in clips_by_file(lake).get("cut_short.mp4", [])]
    problems = [m for m in said if m]
    assert problems  # the missing end is noticed somewhere
    for m in problems:
        assert "sila-blobs" not in m and "/tmp/sila" not in m, m
    errors = [m for m in said[1:] if m]
    assert all(src["id"] in m and user_path in m for m in errors), errors


def test_matroska_thumbnail_is_a_third_in(tmp_path):
    """Matroska has no stream duration field (ffmpeg writes a per-track DURATION tag): an MKV
    with audio is thumbnailed at a third of its video, as the same video in an mp4 is."""
    d = tmp_path / "media"
    d.mkdir()
    for name in ("av.mkv", "av.mp4"):
        _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=25:d=3", "-f", "lavfi", "-i", "sine=d=3",
            *FAST, "-c:a", "aac", str(d / name))  # fmt: skip
    assert read_streams(str(d / "av.mkv")).video_duration_s == pytest.approx(3.0, abs=0.05)
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([d])
    assert lake.run("thumbnail")["state"] == "succeeded"
    rows = sources(lake)
    assert rows["av.mkv"]["thumbnail_ts"] == pytest.approx(1.0, abs=0.05)
    assert rows["av.mkv"]["thumbnail_ts"] == rows["av.mp4"]["thumbnail_ts"]
    assert rows["av.mkv"]["thumbnail"] == rows["av.mp4"]["thumbnail"]  # the same frame


def test_sources_describe_the_default_streams(tmp_path):
    """`sources` states the facts of the streams every stage reads (default disposition), not
    of stream 0: width, height, fps, codec, sample rate and channels."""
    f = tmp_path / "two_of_each.mkv"
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=25", "-f", "lavfi", "-i", "testsrc=s=64x48:r=10",
        "-f", "lavfi", "-i", "sine=r=16000", "-f", "lavfi", "-i", "sine=r=48000",
        "-t", "2", "-map", "0", "-map", "1", "-map", "2", "-map", "3",
        "-disposition:v:0", "0", "-disposition:v:1", "default",
        "-disposition:a:0", "0", "-disposition:a:1", "default",
        "-c:v:0", "libx264", "-c:v:1", "mpeg4", "-preset", "ultrafast", "-threads", "1",
        "-c:a", "aac", "-ac:a:1", "2", str(f))  # fmt: skip
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([f])
    row = sources(lake)["two_of_each.mkv"]
    got = {k: row[k] for k in ("width", "height", "fps", "video_codec", "sample_rate", "channels")}
    assert got == {"width": 64, "height": 48, "fps": 10.0, "video_codec": "mpeg4",
                   "sample_rate": 48000, "channels": 2}  # fmt: skip
    s = read_streams(str(f))
    assert (s.width, s.height, s.fps, s.sample_rate) == (64, 48, 10.0, 48000)


def test_a_one_frame_video_is_an_image_clip(tmp_path):
    """A one-frame H.264 "video" (mkv, MPEG-TS: containers that do not call it a still) has no
    span to cut: it is ingested as an image and becomes one image clip, not nothing."""
    d = tmp_path / "media"
    d.mkdir()
    for ext in ("mkv", "ts"):
        _ff("-f", "lavfi", "-i", "testsrc2=s=64x48:r=25", "-frames:v", "1", *FAST,
            str(d / f"one.{ext}"))  # fmt: skip
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([d])
    rows = sources(lake)
    assert {n: (r["media_kind"], r["frame_count"]) for n, r in rows.items()} == {
        "one.mkv": ("image", 1), "one.ts": ("image", 1)
    }  # fmt: skip
    assert lake.run("split", settings={"method": "fixed-stride"})["state"] == "succeeded"
    assert lake.run("transcode")["state"] == "succeeded"
    clips = clips_by_file(lake)
    for name in rows:
        (clip,) = clips[name]
        assert clip["clip_kind"] == "image" and clip["video_frames"] == 1, clip
