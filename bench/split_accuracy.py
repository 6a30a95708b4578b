"""Shot-boundary accuracy on generated videos: TransNetV2 (our `split`) vs. PySceneDetect.

Each video concatenates distinct lavfi sources joined by hard cuts or dissolves (xfade) at
recorded frames. A ground-truth transition is an interval of frames ([c, c] for a cut at frame
c, the first frame of the new shot; [o, o + d] for a dissolve of d frames starting at o); a
detection matches it when the two intervals are at most 2 frames apart (one-to-one).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench._util import report  # first: sets LANCE_LOG
from sila.media import run_ffmpeg

W, H, FPS = 320, 180, 25
TOL = 2
_S = f"s={W}x{H}:r={FPS}"
SOURCES = [
    f"testsrc2={_S}",
    f"mandelbrot={_S}:start_scale=1.5:end_scale=0.3",
    f"life={_S}:seed={{seed}}:ratio=0.2:mold=20:life_color=#ffd040:death_color=#400020",
    f"smptebars={_S}",
    f"gradients={_S}:seed={{seed}}:speed=0.05",
    f"sierpinski={_S}:seed={{seed}}:type=carpet",
    f"zoneplate={_S}:kt2=30:kx2=500:ky2=500",
    f"colorchart=r={FPS}",
    f"cellauto={_S}:rule=110:seed={{seed}}",
    f"perlin={_S}:random_mode=seed:seed={{seed}}:octaves=4:persistence=0.6:tscale=6",
    f"rgbtestsrc={_S}",
    f"testsrc={_S}",
    f"color=c=0x2a4f6e:{_S},drawbox=x=40:y=30:w=110:h=120:color=0xe0c080:t=fill,"
    "noise=alls=6:allf=t",
    f"mptestsrc=r={FPS}:t=dc_luma",
]


@dataclass
class Truth:
    path: Path
    frames: int
    transitions: list[tuple[int, int, str]] = field(default_factory=list)  # (a, b, kind)


def make_video(path: Path, rng: np.random.Generator, shots: int = 5) -> Truth:
    """One video of `shots` distinct sources joined by cuts or dissolves; its ground truth."""
    picks = rng.choice(len(SOURCES), size=shots, replace=False)
    lengths = rng.integers(50, 100, size=shots)
    chains, truth = [], Truth(path, 0)
    for i, (k, n) in enumerate(zip(picks, lengths, strict=True)):
        src = SOURCES[k].format(seed=int(rng.integers(1, 1000)))
        hue = int(rng.integers(-60, 60))
        chains.append(
            f"{src},scale={W}:{H},setsar=1,hue=h={hue},format=yuv420p,fps={FPS},"
            f"trim=end_frame={n},setpts=PTS-STARTPTS,settb=AVTB[s{i}]"
        )
    cur, total = "s0", int(lengths[0])
    for i in range(1, shots):
        if rng.random() < 0.5:
            chains.append(f"[{cur}][s{i}]concat=n=2:v=1:a=0[c{i}]")
            truth.transitions.append((total, total, "cut"))
            total += int(lengths[i])
        else:
            d = int(rng.integers(8, 21))
            kind = str(rng.choice(["fade", "dissolve"]))
            offset = (total - d) / FPS
            chains.append(
                f"[{cur}][s{i}]xfade=transition={kind}:duration={d / FPS}:offset={offset}[c{i}]"
            )
            truth.transitions.append((total - d, total, "dissolve"))
            total += int(lengths[i]) - d
        cur = f"c{i}"
    enc = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
    run_ffmpeg(["-y", "-filter_complex", ";".join(chains), "-map", f"[{cur}]", *enc, str(path)])
    truth.frames = total
    return truth


def make_set(out: Path, videos: int, seed: int = 7) -> list[Truth]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    return [make_video(out / f"shots_{i:02d}.mp4", rng) for i in range(videos)]


def _gap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, a[0] - b[1], b[0] - a[1])


def score(truths: list[tuple[int, int, str]], found: list[tuple[int, int]], kind: str | None):
    """(tp, fp, fn) for one video; with `kind`, only transitions of that kind count as truth,
    detections matching another kind are ignored and unmatched detections count as fp."""
    free = list(found)
    tp = fn = 0
    for a, b, k in sorted(truths, key=lambda t: t[0]):
        best = min(free, key=lambda f: _gap(f, (a, b)), default=None)
        if best is not None and _gap(best, (a, b)) <= TOL:
            free.remove(best)
            tp += kind is None or k == kind
        elif kind is None or k == kind:
            fn += 1
    return tp, len(free), fn


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def detect_transnet(truths: list[Truth], workdir: Path) -> tuple[dict[Path, list], float]:
    """Transitions found by the `split` stage, as [end of a shot, start of the next] intervals."""
    import sila

    lake = sila.Lake(workdir / "lake").init()
    lake.ingest([t.path for t in truths])
    t0 = time.perf_counter()
    job = lake.run("split")
    elapsed = time.perf_counter() - t0
    assert job["state"] == "succeeded", job
    rows = lake.table("sources").to_table(columns=["uri", "filename", "split_shots"]).to_pylist()
    by_name = {r["filename"]: r["split_shots"] or [] for r in rows}
    out = {}
    for t in truths:
        shots = by_name[t.path.name]
        out[t.path] = [
            (a["end_frame"], b["start_frame"]) for a, b in zip(shots, shots[1:], strict=False)
        ]
    return out, elapsed


def detect_pyscenedetect(truths: list[Truth]) -> tuple[dict[Path, list], float]:
    from scenedetect import ContentDetector, detect

    out = {}
    t0 = time.perf_counter()
    for t in truths:
        scenes = detect(str(t.path), ContentDetector())
        out[t.path] = [(s.frame_num, s.frame_num) for s, _ in scenes[1:]]
    return out, time.perf_counter() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench split_accuracy")
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="sila-bench-") as d:
        truths = make_set(Path(d) / "media", a.videos, a.seed)
        frames = sum(t.frames for t in truths)
        ours, t_ours = detect_transnet(truths, Path(d))
        ref, t_ref = detect_pyscenedetect(truths)
    cuts = sum(k == "cut" for t in truths for *_, k in t.transitions)
    diss = sum(k == "dissolve" for t in truths for *_, k in t.transitions)
    print(
        f"# {len(truths)} videos, {frames} frames, {cuts} hard cuts, {diss} dissolves, +-{TOL} frames"
    )
    print(f"# {'method':<22} {'subset':<9} {'P':>6} {'R':>6} {'F1':>6}  (tp/fp/fn)")
    f1s = {}
    for label, found in (("transnetv2 (split)", ours), ("pyscenedetect content", ref)):
        for kind in (None, "cut", "dissolve"):
            tot = np.zeros(3, int)
            for t in truths:
                tot += score(t.transitions, found[t.path], kind)
            p, r, f1 = prf(*tot)
            f1s[(label, kind)] = f1
            print(
                f"# {label:<22} {kind or 'all':<9} {p:6.3f} {r:6.3f} {f1:6.3f}  ({'/'.join(map(str, tot))})"
            )
    for kind in (None, "cut", "dissolve"):
        ours_f1 = f1s[("transnetv2 (split)", kind)]
        ref_f1 = f1s[("pyscenedetect content", kind)]
        report(f"split_f1_{kind or 'all'}", ours_f1, ref_f1, unit="", note="F1, higher is better")
    report("split_accuracy_seconds", t_ours, t_ref, note="ours: lake.run incl. model load")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
