"""Generated truth for the quality and audio filters: small clips with known artifacts.

Video cases are numpy frames (a textured scene that pans, then an artifact applied: frozen,
blurred, dark, gray residual bars, two panes, burnt-in text, sideways text) piped into real
ffmpeg/libx264. Audio cases ride on a short moving video: silence, a held tone, music-like
chords, noise, and real speech (espeak-ng, synthesised once and shipped as
`tests/data/speech_espeak.flac`). `VIDEO_CASES` / `AUDIO_CASES` say what each case should get.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sila.media import ffmpeg_exe

W, H, FPS = 320, 180, 15
SPEECH = Path(__file__).resolve().parents[2] / "tests" / "data" / "speech_espeak.flac"


@dataclass(frozen=True)
class Case:
    name: str
    keep: bool | None  # expected decision (None: undetermined)
    tags: tuple[str, ...] = ()  # tags the quality stage must find (others must be absent)


VIDEO_CASES = [
    Case("moving", True),
    Case("static", False, ("static", "frozen")),
    Case("blurred", True, ("blur",)),
    Case("dark", False, ("dark",)),
    Case("letterboxed", True, ("border",)),
    Case("split_screen", False, ("split_screen",)),
    Case("text_overlay", True, ("text_overlay",)),
    Case("rotated", False, ("text_overlay", "rotated")),
]
# expected audio signal sides: silent?, speech?, music?
AUDIO_CASES = {
    "silence": {"silent": True, "speech": False, "music": False},
    "tone": {"silent": False, "speech": False, "music": False},
    "music": {"silent": False, "speech": False, "music": True},
    "noise": {"silent": False, "speech": False, "music": False},
    "speech": {"silent": False, "speech": True, "music": False},
}


def _texture(seed: int, w: int, h: int) -> np.ndarray:
    """A scene-like gray texture: smooth blobs plus sharp shapes (edges for the blur test)."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.uniform(40, 215, (h // 16, w // 16)).astype(np.float32), (w, h))
    img = cv2.GaussianBlur(base, (0, 0), 4) + rng.normal(0, 6, (h, w)).astype(np.float32)
    for _ in range(60):
        x, y, r = rng.integers(0, w), rng.integers(0, h), int(rng.integers(3, 14))
        cv2.circle(img, (int(x), int(y)), r, float(rng.uniform(20, 235)), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _pan(tex: np.ndarray, i: int, w: int, h: int, dx: float = 3.0, dy: float = 1.0) -> np.ndarray:
    x, y = int(i * dx) % (tex.shape[1] - w), int(i * dy) % (tex.shape[0] - h)
    return tex[y : y + h, x : x + w]


def _text(frame: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.9) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(frame, text, org, font, scale, (0, 0, 0), 5, cv2.LINE_AA)
    cv2.putText(frame, text, org, font, scale, (255, 255, 255), 2, cv2.LINE_AA)


def video_frames(case: str, n: int) -> list[np.ndarray]:
    tex = cv2.cvtColor(_texture(1, W * 4, H * 3), cv2.COLOR_GRAY2BGR)
    other = cv2.cvtColor(_texture(2, W * 4, H * 3), cv2.COLOR_GRAY2BGR)
    frames = []
    for i in range(n):
        f = _pan(tex, 0 if case == "static" else i, W, H).copy()
        if case == "blurred":
            f = cv2.GaussianBlur(f, (0, 0), 3.0)
        elif case == "dark":
            f = (f.astype(np.float32) * 0.07).astype(np.uint8)
        elif case == "letterboxed":
            bar = H // 6
            f[:bar], f[-bar:] = 60, 60  # gray bars: not black, so cropdetect leaves them
        elif case == "split_screen":
            half = W // 2
            f[:, half:] = _pan(other, i, W - half, H, dx=0.0, dy=2.0)
            f[:, half - 1 : half + 1] = 255  # the usual divider line
        elif case == "text_overlay":
            _text(f, "SUBSCRIBE NOW", (30, H - 30))
        elif case == "rotated":  # the scene shot sideways: its caption runs top to bottom
            side = np.zeros((W, H, 3), np.uint8)
            side[:] = _pan(tex, i, H, W)
            _text(side, "KITCHEN CAM 2", (20, W - 20), 0.8)
            side = cv2.rotate(side, cv2.ROTATE_90_CLOCKWISE)  # (H, W) again
            f = side
        frames.append(f)
    return frames


def write_video(path: Path, frames: list[np.ndarray], audio: list[str] | None = None) -> None:
    """Encode BGR frames (and an optional ffmpeg audio input) to H.264 mp4."""
    h, w = frames[0].shape[:2]
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "-",
        *(audio or []), "-map", "0:v",
        *(["-map", "1:a", "-c:a", "aac", "-b:a", "96k", "-shortest"] if audio else []),
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
        "-threads", "1", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True, timeout=120)


def audio_input(case: str, seconds: float, sr: int = 16000) -> list[str]:
    if case == "speech":
        return ["-i", str(SPEECH)]
    if case == "silence":
        return ["-f", "lavfi", "-i", f"anullsrc=r={sr}:cl=mono"]
    if case == "tone":
        return ["-f", "lavfi", "-i", f"sine=f=440:sample_rate={sr},volume=0.25"]
    if case == "noise":
        return ["-f", "lavfi", "-i", f"anoisesrc=c=pink:a=0.2:r={sr}:seed=7"]
    if case == "music":  # chords changing every 0.25 s, each note with harmonics, plucked
        notes = [
            [261.6, 329.6, 392.0],
            [220.0, 261.6, 329.6],
            [349.2, 440.0, 523.3],
            [392.0, 493.9, 587.3],
        ]
        parts = []
        for k, chord in enumerate(notes):
            tone = "+".join(f"{0.08 / j}*sin(2*PI*{f * j:.1f}*t)" for f in chord for j in (1, 2, 3))
            parts.append(f"if(eq(mod(floor(t*4),4),{k}),({tone})*exp(-3*mod(t,0.25)),0)")
        expr = "+".join(parts)
        return ["-f", "lavfi", "-i", f"aevalsrc='{expr}':s={sr}:c=mono"]
    raise ValueError(case)


def make_video_cases(out: Path, seconds: float = 3.0) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for c in VIDEO_CASES:
        paths[c.name] = out / f"v_{c.name}.mp4"
        write_video(paths[c.name], video_frames(c.name, int(seconds * FPS)))
    return paths


def make_audio_cases(out: Path, seconds: float = 4.0) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    frames = video_frames("moving", int(seconds * FPS))
    small = [cv2.resize(f, (160, 90)) for f in frames]
    paths = {}
    for name in AUDIO_CASES:
        paths[name] = out / f"a_{name}.mp4"
        write_video(paths[name], small, audio_input(name, seconds))
    return paths


def make_no_audio(out: Path, seconds: float = 2.0) -> Path:
    path = out / "a_no_track.mp4"
    write_video(
        path, [cv2.resize(f, (160, 90)) for f in video_frames("moving", int(seconds * FPS))]
    )
    return path


def case_lake(root: str | Path, ocr_frames: int = 1):
    """Every case through the real pipeline in a new lake under `root`: ingest -> split (one
    window per file) -> transcode -> video_signals / audio_signals -> quality / audio.

    Returns (lake, {case name: clip id}); audio cases are named `audio_<case>`.
    """
    from sila.lake import Lake

    base = Path(root)
    media = base / "media"
    paths = {**make_video_cases(media)}
    paths.update({f"audio_{k}": v for k, v in make_audio_cases(media).items()})
    paths["audio_no_track"] = make_no_audio(media)
    lake = Lake(base / "lake").init()
    rep = lake.ingest(list(paths.values()))
    if rep.failed:
        raise RuntimeError(f"ingest failed: {rep.failures}")
    split = {"method": "fixed-stride", "window_s": 10.0, "stride_s": 10.0}
    for stage, settings in (
        ("split", split),
        ("transcode", {}),
        ("video_signals", {"ocr_frames": ocr_frames}),
        ("audio_signals", {}),
        ("quality", {}),
        ("audio", {}),
    ):
        job = lake.run(stage, settings=settings)
        if job["state"] != "succeeded":
            raise RuntimeError(f"{stage} failed: {job}")
    names = {p.name: k for k, p in paths.items()}
    src = lake.table("sources").to_table(columns=["id", "filename"]).to_pylist()
    by_src = {s["id"]: names[s["filename"]] for s in src}
    clips = lake.table("clips").to_table(columns=["id", "source_id"]).to_pylist()
    ids = {by_src[c["source_id"]]: c["id"] for c in clips}
    if len(ids) != len(paths):
        raise RuntimeError(f"expected one clip per generated file, got {len(ids)}/{len(paths)}")
    return lake, ids


__all__ = [
    "AUDIO_CASES",
    "VIDEO_CASES",
    "Case",
    "make_audio_cases",
    "make_video_cases",
]
