"""Deterministic demo corpus: small synthetic videos, images and audio made with ffmpeg.

Everything is generated from ffmpeg's ``lavfi`` test sources, so no download is needed.
Output is byte-identical across runs (and CPUs): bitexact muxing, no metadata, x264 with
``cpu-independent=1`` and one thread, and ``-cpuflags 0`` so ffmpeg's own DSP (AAC, swscale)
takes the portable C paths. Content-hash ids of the files therefore never change.

``corpus.json`` in the output folder records the ground truth of every file: kind, size,
frame rate, frame count, cut frames of the multi-shot clips, the letterbox content box
(``[x, y, w, h]``), rotation (clockwise degrees, as reported by :func:`sila.media.probe`),
and which files are broken on purpose.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sila.media import run_ffmpeg

logger = logging.getLogger(__name__)

W, H, FPS, SR = 320, 180, 25, 44100
_S = f"s={W}x{H}:r={FPS}"
_ENC_V = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
          "-threads", "1", "-x264-params", "cpu-independent=1"]  # fmt: skip
_ENC_A = ["-c:a", "aac", "-b:a", "64k", "-ac", "1"]
_EXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
          "-map_metadata", "-1", "-map_chapters", "-1"]  # fmt: skip

# (name, lavfi source, tone Hz) per shot; visually distinct content, hard cuts between them.
_SHOTS_A = [
    ("testsrc2", f"testsrc2={_S}", 330),
    ("mandelbrot", f"mandelbrot={_S}:start_scale=1.5:end_scale=0.3", 440),
    ("life", f"life={_S}:seed=7:ratio=0.2:mold=20:life_color=#ffd040:death_color=#400020"
             ":mold_color=#0050a0", 550),
    ("smptebars", f"smptebars={_S}", 660),
]  # fmt: skip
_SHOTS_B = [
    ("gradients", f"gradients={_S}:seed=5:c0=#ff4000:c1=#20c0ff:speed=0.05", 392),
    ("sierpinski", f"sierpinski={_S}:seed=3:type=carpet", 494),
    ("zoneplate", f"zoneplate={_S}:kt2=30:kx2=500:ky2=500", 587),
    ("colorchart", f"colorchart=r={FPS}", 698),
]
_LENGTHS = {  # frames per shot
    ("a", False): [30, 25, 35, 30],
    ("b", False): [28, 32, 30, 26],
    ("a", True): [24, 20, 26],
    ("b", True): [26, 22, 24],
}
_LETTERBOX = (0, 22, W, 136)  # x, y, w, h of the picture inside the black bars


def _ff(*args: str | list[str]) -> None:
    flat: list[str] = ["-y", "-cpuflags", "0"]
    for a in args:
        flat.extend([a] if isinstance(a, str) else a)
    run_ffmpeg(flat, timeout=120)


def _video_entry(frames: int, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": "video", "valid": True, "width": W, "height": H}
    entry.update(fps=FPS, frame_count=frames, duration_s=round(frames / FPS, 3))
    entry.update(has_audio=False, rotation=0)
    entry.update(extra)
    return entry


def _multishot(out: Path, shots: list[tuple[str, str, int]], lengths: list[int]) -> dict:
    chains, pads, spans, start = [], [], [], 0
    for i, ((name, src, hz), n) in enumerate(zip(shots, lengths, strict=False)):
        chains.append(
            f"{src},scale={W}:{H}:out_range=tv,setsar=1,format=yuv420p,trim=end_frame={n},"
            f"setpts=PTS-STARTPTS[v{i}]"
        )
        chains.append(
            f"sine=f={hz}:sample_rate={SR},atrim=end_sample={n * SR // FPS},"
            f"asetpts=PTS-STARTPTS[a{i}]"
        )
        pads.append(f"[v{i}][a{i}]")
        spans.append({"source": name, "start_frame": start, "end_frame": start + n})
        start += n
    graph = ";".join(chains) + f";{''.join(pads)}concat=n={len(pads)}:v=1:a=1[v][a]"
    _ff("-filter_complex", graph, "-map", "[v]", "-map", "[a]", _ENC_V, _ENC_A, _EXACT, str(out))
    cuts = [s["start_frame"] for s in spans[1:]]
    return _video_entry(start, has_audio=True, cut_frames=cuts, shots=spans)


def make_corpus(out_dir: str | Path, *, small: bool = False) -> list[Path]:
    """Generate the demo corpus into ``out_dir``; return the media paths (broken ones too).

    ``small=True`` makes fewer, shorter clips (for tests). Writes ``corpus.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sec = 1.2 if small else 2.0  # length of the single-shot clips
    n = round(sec * FPS)
    shots = 3 if small else 4
    x, y, bw, bh = _LETTERBOX
    entries: dict[str, dict[str, Any]] = {}

    def multishot(tag: str, shot_defs: list[tuple[str, str, int]]) -> None:
        lengths = _LENGTHS[(tag, small)]
        entries[f"multishot_{tag}.mp4"] = _multishot(
            out / f"multishot_{tag}.mp4", shot_defs[:shots], lengths
        )

    def letterboxed() -> None:
        src = (
            f"perlin=s={bw}x{bh}:r={FPS}:random_mode=seed:seed=3:octaves=4:persistence=0.6"
            ":tscale=6,format=rgb24,colorchannelmixer=rr=1.0:gg=0.55:bb=0.25"
            f",pad={W}:{H}:{x}:{y}:black"
        )
        _ff("-f", "lavfi", "-i", src, "-frames:v", str(n), _ENC_V, _EXACT,
            str(out / "letterboxed.mp4"))  # fmt: skip
        entries["letterboxed.mp4"] = _video_entry(n, content_box=list(_LETTERBOX))

    def static() -> None:
        src = (
            f"color=c=0x2a4f6e:{_S},drawbox=x=40:y=30:w=110:h=120:color=0xe0c080:t=fill,"
            "drawbox=x=190:y=70:w=90:h=60:color=0xa03030:t=fill,noise=alls=2:allf=t:all_seed=11"
        )
        _ff("-f", "lavfi", "-i", src, "-frames:v", str(n), _ENC_V, _EXACT, str(out / "static.mp4"))
        entries["static.mp4"] = _video_entry(n, static=True)

    def noise_audio() -> None:
        vsrc = f"gradients={_S}:n=3:c0=#10a040:c1=#8020c0:c2=#f0f0f0:seed=9:speed=0.02"
        asrc = f"anoisesrc=color=white:seed=42:amplitude=0.4:sample_rate={SR}"
        _ff("-f", "lavfi", "-i", vsrc, "-f", "lavfi", "-i", asrc, "-frames:v", str(n),
            "-af", f"atrim=end_sample={n * SR // FPS}", _ENC_V, _ENC_A, _EXACT,
            str(out / "noise_audio.mp4"))  # fmt: skip
        entries["noise_audio.mp4"] = _video_entry(n, has_audio=True, audio="white noise")

    def rotated(tmp: Path) -> None:
        plain = tmp / "rotated_plain.mp4"
        _ff("-f", "lavfi", "-i", f"testsrc={_S}", "-frames:v", str(n), _ENC_V, _EXACT, str(plain))
        # -display_rotation is counter-clockwise: -90 == legacy "rotate=90" (portrait phone clip)
        _ff("-display_rotation", "-90", "-i", str(plain), "-c", "copy", _EXACT,
            str(out / "rotated.mp4"))  # fmt: skip
        entries["rotated.mp4"] = _video_entry(n, rotation=90, display_width=H, display_height=W)

    def corrupt(tmp: Path) -> None:
        whole = tmp / "whole.mp4"  # default mp4 muxing puts the moov atom at the end
        _ff("-f", "lavfi", "-i", f"yuvtestsrc={_S}", "-frames:v", str(n), _ENC_V, _EXACT,
            str(whole))  # fmt: skip
        data = whole.read_bytes()
        (out / "corrupt.mp4").write_bytes(data[: len(data) * 40 // 100])
        why = "first 40% of an mp4 whose moov atom is at the end"
        entries["corrupt.mp4"] = {"kind": "corrupt", "valid": False, "reason": why}

    def images() -> None:
        _ff("-f", "lavfi", "-i", f"smptehdbars={_S}", "-frames:v", "1", "-update", "1", _EXACT,
            str(out / "image_bars.png"))  # fmt: skip
        photo = "mandelbrot=s=400x300:start_x=-0.743643887:start_y=0.131825904:start_scale=0.02"
        _ff("-f", "lavfi", "-i", photo, "-frames:v", "1", "-update", "1", "-q:v", "3",
            "-pix_fmt", "yuvj420p", _EXACT, str(out / "image_photo.jpg"))  # fmt: skip
        entries["image_bars.png"] = {"kind": "image", "valid": True, "width": W, "height": H}
        entries["image_photo.jpg"] = {"kind": "image", "valid": True, "width": 400, "height": 300}

    def audio() -> None:
        tone_s, speech_s = (1.0, 1.5) if small else (2.0, 3.0)
        _ff("-f", "lavfi", "-i", f"sine=f=440:sample_rate={SR}",
            "-af", f"atrim=end_sample={int(tone_s * SR)}", "-c:a", "pcm_s16le", _EXACT,
            str(out / "tone.wav"))  # fmt: skip
        speech = (
            "anoisesrc=color=pink:seed=7:amplitude=0.6:sample_rate=16000,"
            "bandpass=f=800:width_type=h:w=1200,tremolo=f=4:d=0.9,"
            f"atrim=end_sample={int(speech_s * 16000)}"
        )
        _ff("-f", "lavfi", "-i", speech, "-c:a", "flac", _EXACT, str(out / "speechlike.flac"))
        for name, dur, rate in (("tone.wav", tone_s, SR), ("speechlike.flac", speech_s, 16000)):
            entries[name] = {"kind": "audio", "valid": True, "duration_s": dur,
                             "sample_rate": rate, "channels": 1}  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="sila-corpus-") as tmpdir:
        tmp = Path(tmpdir)
        jobs = [
            lambda: multishot("a", _SHOTS_A),
            lambda: multishot("b", _SHOTS_B),
            letterboxed,
            static,
            noise_audio,
            lambda: rotated(tmp),
            lambda: corrupt(tmp),
            images,
            audio,
        ]
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for fut in [pool.submit(job) for job in jobs]:
                fut.result()
    # near-duplicate: same content as multishot_a, re-encoded at another quality/bitrate
    enc = [*_ENC_V, "-preset", "faster", "-crf", "33", "-c:a", "aac", "-b:a", "32k", "-ac", "1"]
    _ff("-i", str(out / "multishot_a.mp4"), enc, _EXACT, str(out / "near_dup.mp4"))
    entries["near_dup.mp4"] = {**entries["multishot_a.mp4"], "near_dup_of": "multishot_a.mp4"}

    (out / "notes.txt").write_text(
        "Demo corpus notes.\nThis file is text, not media.\n", encoding="utf-8"
    )
    entries["notes.txt"] = {"kind": "text", "valid": False, "reason": "not a media file"}
    (out / "empty.mp4").write_bytes(b"")
    entries["empty.mp4"] = {"kind": "empty", "valid": False, "reason": "zero-byte file"}

    order = [
        "multishot_a.mp4", "multishot_b.mp4", "near_dup.mp4", "letterboxed.mp4", "static.mp4",
        "noise_audio.mp4", "rotated.mp4", "image_bars.png", "image_photo.jpg", "tone.wav",
        "speechlike.flac", "corrupt.mp4", "notes.txt", "empty.mp4",
    ]  # fmt: skip
    manifest = {"version": 1, "small": small, "fps": FPS, "files": {k: entries[k] for k in order}}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (out / "corpus.json").write_text(text, encoding="utf-8")
    logger.info("demo corpus: %d files in %s", len(order), out)
    return [out / name for name in order]
