"""The one frame reader (`sila.media.FrameReader`), the one resize rule, audio blocks, and the
error normalisation, on small generated media."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sila.errors import MediaError
from sila.media import (
    FrameReader,
    audio_blocks,
    frame_at,
    output_size,
    run_ffmpeg,
    sample_frames,
    user_message,
)

X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-threads", "1", "-pix_fmt", "yuv420p"]


def _ff(*args: str) -> None:
    run_ffmpeg(["-y", *args], timeout=120)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("frames")
    p = {
        k: d / k
        for k in ("cfr.mp4", "vfr.mp4", "portrait.mp4", "anamorphic.mp4", "tone.wav", "long.mp4")
    }
    # 2 s at 25 fps; the left half black, the right half white (orientation is visible)
    half = "color=c=black:s=64x36:r=25:d=2[a];color=c=white:s=64x36:r=25:d=2[b];[a][b]hstack"
    _ff("-filter_complex", half, *X264, str(p["cfr.mp4"]))
    # 30 frames at 30 fps, then every third frame (10 fps)
    _ff("-f", "lavfi", "-i", "testsrc2=s=96x54:r=30", "-vf", "select='lt(n\\,30)+not(mod(n\\,3))'",
        "-fps_mode", "vfr", "-frames:v", "50", *X264, str(p["vfr.mp4"]))  # fmt: skip
    # stored landscape 128x36, shown portrait (rotate 90 clockwise)
    _ff("-display_rotation", "-90", "-i", str(p["cfr.mp4"]), "-c", "copy", str(p["portrait.mp4"]))
    # stored 64x36 with a 2:1 sample aspect ratio: shown 128x36
    _ff("-f", "lavfi", "-i", "testsrc2=s=64x36:r=10", "-t", "1", "-vf", "setsar=2/1", *X264,
        str(p["anamorphic.mp4"]))  # fmt: skip
    _ff("-f", "lavfi", "-i", "sine=f=440:d=1.5:sample_rate=44100", str(p["tone.wav"]))
    _ff("-f", "lavfi", "-i", "testsrc2=s=160x90:r=25", "-t", "40", *X264, "-g", "50",
        str(p["long.mp4"]))  # fmt: skip
    return p


def test_output_size_is_one_rule():
    assert output_size(1920, 1080, short_side=720, even=True) == (1280, 720)
    assert output_size(320, 136, short_side=720, even=True) == (320, 136)  # never up
    assert output_size(320, 180, short_side=360, upscale=True) == (640, 360)
    assert output_size(1, 4000, max_side=384) == (1, 384)  # a side never rounds to 0
    assert output_size(320, 180, max_side=101, even=True) == (100, 56)
    w, h = output_size(3000, 1000, max_side=103, even=True)
    assert w <= 103 and w % 2 == 0 and h % 2 == 0
    assert output_size(50, 40) == (50, 40)


def test_fps_grid_is_uniform_also_for_variable_rate(media):
    frames = list(FrameReader(str(media["cfr.mp4"]), fps=10.0, fmt="gray"))
    assert len(frames) == 20  # 2 s on a 10 fps grid
    vfr = FrameReader(str(media["vfr.mp4"]), fps=30.0, size=(48, 27))
    times = [t for t, _ in vfr.timed()]
    assert np.allclose(np.diff(times), 1 / 30)
    assert vfr.frames == len(times) and abs(len(times) - 90) <= 2  # 1 s + 2 s at 30 fps
    assert vfr.decoded == 50


def test_times_take_the_first_frame_at_or_after_and_pad(media):
    r = FrameReader(str(media["cfr.mp4"]), times=[0.0, 0.5, 0.5, 5.0], fmt="gray")
    got = list(r.timed())
    # 25 fps: 0.52 is the first frame at or after 0.5; past the end the last frame stands in
    assert [round(t, 2) for t, _ in got] == [0.0, 0.52, 0.52, 1.96]
    none_past = list(FrameReader(str(media["cfr.mp4"]), times=[5.0], pad=False))
    assert none_past == []
    with pytest.raises(MediaError, match="past the end"):
        frame_at(str(media["cfr.mp4"]), 5.0)


def test_seeking_to_a_late_time_decodes_little(media):
    r = FrameReader(str(media["long.mp4"]), times=[30.0], fmt="gray")
    ((t, _),) = list(r.timed())
    assert t == pytest.approx(30.0, abs=0.05)
    assert r.decoded < 200  # a seek to the keyframe before, not 750 frames from the start


def test_rotation_and_sample_aspect_are_applied(media):
    (img,) = FrameReader(str(media["portrait.mp4"]), count=1)
    assert img.shape == (128, 36, 3)  # upright: portrait
    # rotated 90 clockwise: the black left half is on top now
    assert img[:48].mean() < 40 and img[-48:].mean() > 215
    (wide,) = FrameReader(str(media["anamorphic.mp4"]), count=1, fmt="gray")
    assert wide.shape == (36, 128)
    (small,) = FrameReader(str(media["portrait.mp4"]), count=1, max_side=64, even=True)
    assert small.shape == (64, 18, 3)


def test_pixel_formats(media):
    rgb, bgr, gray = (
        next(iter(FrameReader(str(media["vfr.mp4"]), count=1, fmt=f)))
        for f in ("rgb24", "bgr24", "gray")
    )
    assert rgb.shape == (54, 96, 3) and gray.shape == (54, 96)
    assert np.array_equal(rgb[..., ::-1], bgr)
    assert sample_frames(str(media["vfr.mp4"]), 4, size=(16, 16), fmt="gray")[0].shape == (16, 16)


def test_chunks_recycle_two_buffers(media):
    r = FrameReader(str(media["cfr.mp4"]), fps=25.0, size=(48, 27))
    ids = set()
    n = 0
    for chunk in r.chunks(7):
        ids.add(id(chunk.base) if chunk.base is not None else id(chunk))
        n += len(chunk)
    assert n == 50 == r.frames and len(ids) <= 2


def test_memory_stays_flat_in_the_length(media):
    """Decoding 1000 frames grows the peak RSS by far less than holding them would."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = FrameReader(str(media["long.mp4"]), fmt="rgb24")  # full size, every frame
    n = sum(1 for _ in r)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert n == 1000
    assert grown_kb < n * 160 * 90 * 3 / 1024 / 4  # a quarter of what holding them costs


def test_every_failure_is_a_media_error_naming_the_users_path(tmp_path, media):
    bad = tmp_path / "scratch-copy.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 2000)
    with pytest.raises(MediaError, match="ffmpeg could not .*s3://b/clip.mp4") as info:
        list(FrameReader(str(bad), label="s3://b/clip.mp4"))
    assert str(bad) not in str(info.value)
    with pytest.raises(MediaError, match="no video stream"):
        list(FrameReader(str(media["tone.wav"])))
    with pytest.raises(MediaError, match="file not found"):
        list(FrameReader(str(tmp_path / "missing.mp4")))
    msg = user_message(MediaError(f"broken: {bad}"), str(bad), "src1", "s3://b/clip.mp4")
    assert msg == "broken: s3://b/clip.mp4 (source src1)"


def test_audio_blocks_are_mono_float_at_the_rate(media, tmp_path):
    blocks = list(audio_blocks(str(media["tone.wav"]), sample_rate=8000, block_s=0.5))
    assert all(b.dtype == np.float32 for b in blocks) and [len(b) for b in blocks[:2]] == [4000] * 2
    assert sum(len(b) for b in blocks) == pytest.approx(12000, abs=80)
    peak = max(float(np.abs(b).max()) for b in blocks)
    assert peak == pytest.approx(0.125, abs=0.01)  # lavfi sine: amplitude 1/8 of full scale
    with pytest.raises(MediaError, match="ffmpeg could not decode audio.*s3://x"):
        list(audio_blocks(str(media["cfr.mp4"]), label="s3://x"))


def test_camera_motion_broken_file_is_a_row_error(tmp_path, media):
    pytest.importorskip("cv2")
    from sila.stages.camera_motion import CameraMotion

    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 2000)
    stage = CameraMotion()
    stage.setup(None)
    rows = [
        {"video": str(bad), "source_id": "src1"},
        {"video": str(media["vfr.mp4"]), "source_id": "src2"},
    ]
    out = stage.compute(pa.RecordBatch.from_pylist(rows))
    err = out["camera_motion_error"]
    assert err[0].startswith("ffmpeg could not open the media: truncated or corrupt")
    assert err[0].endswith("(source src1)") and str(bad) not in err[0]
    assert err[1] is None and out["cam_actions"][1] and out["cam_actions"][0] is None
    assert stage.counters["row_errors"] == 1
