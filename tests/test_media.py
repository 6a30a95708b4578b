"""Tests for sila.media (probe, frame extraction, ffmpeg runner) and sila.demo.corpus."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from sila.demo.corpus import make_corpus
from sila.media import MediaError, Probe, extract_frame_jpeg, ffmpeg_exe, probe, probing, run_ffmpeg

VIDEOS = [
    "multishot_a.mp4",
    "multishot_b.mp4",
    "near_dup.mp4",
    "letterboxed.mp4",
    "static.mp4",
    "noise_audio.mp4",
    "rotated.mp4",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[Path]]:
    out = tmp_path_factory.mktemp("corpus")
    paths = make_corpus(out, small=True)
    manifest = json.loads((out / "corpus.json").read_text())
    return out, manifest["files"], paths


def _jpeg_size(data: bytes) -> tuple[int, int]:
    assert data[:2] == b"\xff\xd8", "not JPEG bytes"
    with av.open(io.BytesIO(data)) as c:
        frame = next(c.decode(video=0))
        return frame.width, frame.height


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corpus_layout(corpus):
    out, files, paths = corpus
    assert sorted(p.name for p in paths) == sorted(files)
    assert all(p.exists() for p in paths)
    assert {"corrupt.mp4", "notes.txt", "empty.mp4", "tone.wav", "image_bars.png"} <= set(files)
    assert (out / "empty.mp4").stat().st_size == 0
    assert files["multishot_a.mp4"]["cut_frames"] == [24, 44]
    assert files["letterboxed.mp4"]["content_box"] == [0, 22, 320, 136]
    assert files["near_dup.mp4"]["near_dup_of"] == "multishot_a.mp4"
    assert _sha(out / "near_dup.mp4") != _sha(out / "multishot_a.mp4")


@pytest.mark.parametrize("name", VIDEOS)
def test_probe_video(corpus, name):
    out, files, _ = corpus
    truth = files[name]
    p = probe(out / name)
    assert isinstance(p, Probe)
    assert (p.kind, p.container, p.video_codec, p.pix_fmt) == ("video", "mp4", "h264", "yuv420p")
    assert (p.width, p.height) == (truth["width"], truth["height"])
    assert p.fps == pytest.approx(truth["fps"])
    assert p.frame_count == truth["frame_count"]
    assert p.duration_s == pytest.approx(truth["duration_s"], abs=0.1)
    assert p.has_audio is truth["has_audio"]
    assert p.rotation == truth["rotation"]
    assert p.bitrate and p.bitrate > 0
    if p.has_audio:
        assert (p.audio_codec, p.sample_rate, p.channels) == ("aac", 44100, 1)
    else:
        assert p.audio_codec is None and p.sample_rate is None


def test_probe_rotation(corpus):
    out, _, _ = corpus
    p = probe(out / "rotated.mp4")
    assert p.rotation == 90
    assert (p.width, p.height) == (320, 180)
    assert p.display_size == (180, 320)
    assert probe(out / "static.mp4").display_size == (320, 180)


@pytest.mark.parametrize(
    ("name", "size", "codec"),
    [("image_bars.png", (320, 180), "png"), ("image_photo.jpg", (400, 300), "mjpeg")],
)
def test_probe_image(corpus, name, size, codec):
    out, files, _ = corpus
    p = probe(out / name)
    assert p.kind == "image" == files[name]["kind"]
    assert (p.width, p.height) == size
    assert p.video_codec == codec
    assert p.frame_count == 1
    assert p.fps is None and p.duration_s is None and not p.has_audio
    assert p.rotation == 0


@pytest.mark.parametrize(
    ("name", "codec", "rate"),
    [("tone.wav", "pcm_s16le", 44100), ("speechlike.flac", "flac", 16000)],
)
def test_probe_audio(corpus, name, codec, rate):
    out, files, _ = corpus
    p = probe(out / name)
    assert p.kind == "audio"
    assert (p.audio_codec, p.sample_rate, p.channels) == (codec, rate, 1)
    assert p.has_audio is True
    assert p.duration_s == pytest.approx(files[name]["duration_s"], abs=0.05)
    assert p.width is None and p.video_codec is None and p.frame_count is None


def test_as_dict(corpus):
    out, _, _ = corpus
    d = probe(out / "multishot_a.mp4").as_dict()
    assert list(d) == [
        "kind", "container", "duration_s", "fps", "frame_count", "width", "height",
        "video_codec", "pix_fmt", "rotation", "bitrate", "has_audio", "audio_codec",
        "sample_rate", "channels",
    ]  # fmt: skip
    assert json.loads(json.dumps(d)) == d


def test_broken_corpus_files(corpus):
    out, _, _ = corpus
    cases = {
        "corrupt.mp4": "truncated or corrupt",
        "notes.txt": "not a media file",
        "empty.mp4": "zero-byte file",
    }
    for name, expected in cases.items():
        with pytest.raises(MediaError, match=expected) as info:
            probe(out / name)
        assert name in str(info.value)
    with pytest.raises(MediaError, match="moov"):
        probe(out / "corrupt.mp4")


def test_bad_inputs(tmp_path):
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    with pytest.raises(MediaError, match="zero-byte file"):
        probe(zero)
    text = tmp_path / "readme.mp4"
    text.write_text("just some words\nnot a video\n")
    with pytest.raises(MediaError, match=r"not a media file \(text file\)"):
        probe(text)
    noise = tmp_path / "noise.mov"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes())
    with pytest.raises(MediaError, match="not a media file"):
        probe(noise)
    with pytest.raises(MediaError, match="directory"):
        probe(tmp_path)
    with pytest.raises(MediaError, match="not found"):
        probe(tmp_path / "missing.mp4")
    with pytest.raises(MediaError, match="zero-byte"):
        extract_frame_jpeg(zero, 0.0)


def test_truncated_faststart(corpus, tmp_path):
    out, _, _ = corpus
    fast = tmp_path / "fast.mp4"
    run_ffmpeg(
        ["-i", str(out / "multishot_a.mp4"), "-c", "copy", "-movflags", "+faststart", str(fast)]
    )
    data = fast.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    try:
        p = probe(half)  # moov is intact, first frames decode: usable (partially)
    except MediaError as exc:
        assert "truncated or corrupt" in str(exc)
    else:
        assert p.kind == "video" and p.width == 320
    head = tmp_path / "head.mp4"
    head.write_bytes(data[:1500])  # moov itself cut
    with pytest.raises(MediaError, match="truncated or corrupt"):
        probe(head)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_permission_denied(corpus, tmp_path):
    out, _, _ = corpus
    locked = tmp_path / "locked.mp4"
    locked.write_bytes((out / "static.mp4").read_bytes())
    locked.chmod(0)
    try:
        with pytest.raises(MediaError, match="unreadable: permission denied"):
            probe(locked)
    finally:
        locked.chmod(0o644)


def test_permission_denied_message(corpus, monkeypatch):
    out, _, _ = corpus

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(probing, "open", deny, raising=False)
    with pytest.raises(MediaError, match="unreadable: permission denied"):
        probe(out / "static.mp4")


def test_extract_frame_jpeg(corpus):
    out, _, _ = corpus
    assert _jpeg_size(extract_frame_jpeg(out / "multishot_a.mp4", 1.0)) == (320, 180)
    assert _jpeg_size(extract_frame_jpeg(out / "multishot_a.mp4", 1.0, max_side=2000)) == (320, 180)
    w, h = _jpeg_size(extract_frame_jpeg(out / "multishot_a.mp4", 0.5, max_side=101))
    assert w <= 101 and h <= 101 and w % 2 == 0 and h % 2 == 0
    assert w / h == pytest.approx(16 / 9, rel=0.05)
    # rotation is applied: the stored 320x180 picture comes out portrait
    assert _jpeg_size(extract_frame_jpeg(out / "rotated.mp4", 0.2)) == (180, 320)
    assert _jpeg_size(extract_frame_jpeg(out / "rotated.mp4", 0.2, max_side=160)) == (90, 160)
    # images: t_s is ignored
    w, h = _jpeg_size(extract_frame_jpeg(out / "image_photo.jpg", 42.0, max_side=200))
    assert (w, h) == (200, 150)
    assert _jpeg_size(extract_frame_jpeg(out / "image_bars.png", 0.0)) == (320, 180)


def test_extract_frame_errors(corpus):
    out, _, _ = corpus
    with pytest.raises(MediaError, match="past the end"):
        extract_frame_jpeg(out / "static.mp4", 30.0)
    with pytest.raises(MediaError, match="audio-only"):
        extract_frame_jpeg(out / "tone.wav", 0.0)
    with pytest.raises(MediaError, match="truncated or corrupt"):
        extract_frame_jpeg(out / "corrupt.mp4", 0.0)


def test_run_ffmpeg(corpus, tmp_path):
    out, _, _ = corpus
    assert os.access(ffmpeg_exe(), os.X_OK)
    jpeg = extract_frame_jpeg(out / "image_bars.png", 0.0)
    png = run_ffmpeg(
        [
            "-f",
            "image2pipe",
            "-c:v",
            "mjpeg",
            "-i",
            "pipe:0",
            "-f",
            "image2pipe",
            "-c:v",
            "png",
            "-",
        ],
        input_bytes=jpeg,
    )
    assert png.startswith(b"\x89PNG")
    with pytest.raises(MediaError, match="No such file") as info:
        run_ffmpeg(["-i", str(tmp_path / "nope.mp4"), "-f", "null", "-"])
    assert info.value.stderr


def test_corpus_ground_truth(corpus):
    """Cut frames and the letterbox box in corpus.json match the pixels."""
    out, files, _ = corpus
    for name in ("multishot_a.mp4", "multishot_b.mp4"):
        with av.open(str(out / name)) as c:  # mean colour of 20x20 blocks, frame to frame
            frames = [
                f.to_ndarray(format="rgb24")
                .astype(np.float32)
                .reshape(9, 20, 16, 20, 3)
                .mean((1, 3))
                for f in c.decode(video=0)
            ]
        diffs = np.array([np.abs(b - a).mean() for a, b in zip(frames, frames[1:], strict=False)])
        cuts = files[name]["cut_frames"]
        assert sorted((np.argsort(diffs)[-len(cuts) :] + 1).tolist()) == cuts
        assert np.delete(diffs, np.array(cuts) - 1).max() < 0.5 * diffs[np.array(cuts) - 1].min()
    x, y, w, h = files["letterboxed.mp4"]["content_box"]
    with av.open(str(out / "letterboxed.mp4")) as c:
        gray = next(c.decode(video=0)).to_ndarray(format="gray")
    assert gray[:y].max() < 24 and gray[y + h :].max() < 24
    assert gray[y + 1 : y + h - 1, x : x + w].min() > 40


def test_make_corpus_deterministic(corpus, tmp_path):
    out, files, _ = corpus
    again = make_corpus(tmp_path / "again", small=True)
    for path in again:
        assert _sha(path) == _sha(out / path.name), path.name
    assert (tmp_path / "again" / "corpus.json").read_text() == (out / "corpus.json").read_text()
