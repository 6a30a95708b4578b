"""A generated near-duplicate set with known truth, for dedup tests and `bench dedup`.

Originals are distinct ffmpeg lavfi scenes (fractals, cellular automata, noise, gradients),
slowed to change at a natural video's pace (a cellular automaton stepping 15 times a second
is a new picture every frame, which no camera films);
every third is the previous one's kind of scene with another seed (a hard negative: the same
look, other content).
Each original gets copies under the transforms the issue names: CRF 35 re-encode, 50-75%
rescale, crop up to 10%, brightness +-0.08, trim up to 1 s, and combinations.
"""

from __future__ import annotations

import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sila.media import ffmpeg_exe

W, H, FPS = 320, 240, 15


@dataclass(frozen=True)
class DupClip:
    path: str
    group: int  # the original it derives from; equal groups = true duplicates
    transform: str  # "original" or the copy's transforms, e.g. "crf35+scale0.62"


_MANDEL = [
    (-0.743643, 0.131825),
    (0.285, 0.01),
    (-1.25066, 0.02012),
    (-0.16, 1.0405),
    (-0.722, 0.246),
    (-0.1011, 0.9563),
    (-1.7497, 0.0),
    (0.3602, -0.6413),
]


def _scene(i: int, seed: int) -> str:
    kinds = [
        "mandelbrot=s={}x{}:r={}:start_x={}:start_y={}:start_scale=0.05".format(
            W, H, FPS, *_MANDEL[seed % len(_MANDEL)]
        ),
        f"life=s={W // 4}x{H // 4}:r=3:seed={seed}:ratio=0.3:mold=20:life_color=#{(seed * 2654435761) % 0xFFFFFF:06x},scale={W}:{H}:flags=bilinear,fps={FPS}",
        f"cellauto=s={W // 2}x{H // 2}:r=4:rule={(30 + 7 * seed) % 256}:seed={seed}:scroll=1,scale={W}:{H},fps={FPS}",
        f"perlin=s={W}x{H}:r={FPS}:random_mode=seed:seed={seed}:octaves=3:persistence=0.5:xscale={1 + seed % 3}",
        f"gradients=s={W}x{H}:r={FPS}:seed={seed}:speed=0.02:n={2 + seed % 6}",
        f"sierpinski=s={W}x{H}:r={FPS}:seed={seed}:jump={50 + seed % 50}",
    ]
    return kinds[i % len(kinds)]


def _run(args: list[str]) -> None:
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _variant(rng: random.Random, kinds: list[str]) -> tuple[str, list[str], list[str]]:
    """(label, -vf filters, extra args) for one copy combining `kinds`."""
    vf, extra, label = [], ["-c:v", "libx264", "-crf", "23", "-preset", "veryfast"], []
    for k in kinds:
        if k == "trim":
            t = round(rng.uniform(0.3, 1.0), 2)
            extra = ["-ss", str(t), *extra]
            label.append(f"trim{t}")
        elif k == "crop":
            f = rng.uniform(0.03, 0.10)
            vf.append(f"crop=iw*{1 - f:.3f}:ih*{1 - f:.3f}:iw*{f / 2:.3f}:ih*{f / 2:.3f}")
            label.append(f"crop{f:.2f}")
        elif k == "scale":
            s = rng.uniform(0.5, 0.75)
            vf.append(f"scale=trunc(iw*{s:.3f}/2)*2:trunc(ih*{s:.3f}/2)*2")
            label.append(f"scale{s:.2f}")
        elif k == "bright":
            b = rng.choice([-1, 1]) * rng.uniform(0.04, 0.08)
            vf.append(f"eq=brightness={b:.3f}")
            label.append(f"bright{b:+.2f}")
        elif k == "crf35":
            extra = [a if a != "23" else "35" for a in extra]
            label.append("crf35")
    return "+".join(label), vf, extra


VARIANTS = [
    ["crf35"],
    ["scale"],
    ["crop"],
    ["bright"],
    ["trim"],
    ["crf35", "scale", "bright"],
    ["crop", "trim", "crf35"],
]


def make_dupset(
    out_dir: str, originals: int = 12, variants: int = 3, seconds: float = 3.0, seed: int = 0
) -> list[DupClip]:
    """Write `originals` distinct clips and `variants` copies of each (transform combinations
    cycling through VARIANTS) into `out_dir`; return them all with their truth."""
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(seed)
    jobs: list[tuple[DupClip, list[str]]] = []
    for i in range(originals):
        # every third original is the previous one's kind of scene with another seed: the same
        # look, other content (a hard negative). Later windows of one scene are not used: a
        # continuing zoom or a slow drift is, frame for frame, a crop or a trim of it.
        kind, seed_ = (i - 1, 1000 + i) if i % 3 == 2 else (i, i + 1)
        src = os.path.join(out_dir, f"o{i:03d}.mp4")
        args = ["-f", "lavfi", "-i", _scene(kind, seed_), "-t", str(seconds), "-pix_fmt", "yuv420p"]
        args += ["-c:v", "libx264", "-crf", "18", "-preset", "veryfast", src]
        jobs.append((DupClip(src, i, "original"), args))
    copies: list[tuple[DupClip, list[str]]] = []
    for i in range(originals):
        src = os.path.join(out_dir, f"o{i:03d}.mp4")
        for j in range(variants):
            label, vf, extra = _variant(rng, VARIANTS[(i * variants + j) % len(VARIANTS)])
            dst = os.path.join(out_dir, f"o{i:03d}_v{j}.mp4")
            args = ["-i", src, *(["-vf", ",".join(vf)] if vf else []), *extra, dst]
            copies.append((DupClip(dst, i, label), args))
    with ThreadPoolExecutor(2) as pool:  # originals first: the copies read them
        list(pool.map(lambda j: _run(j[1]), jobs))
        list(pool.map(lambda j: _run(j[1]), copies))
    return [c for c, _ in jobs] + [c for c, _ in copies]
