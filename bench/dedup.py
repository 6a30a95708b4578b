"""Dedup accuracy on a generated set with known truth, and dedup at scale.

`python -m bench dedup [--originals 40] [--variants 5] [--scale-rows 1000000] [--skip-scale]`

Accuracy: originals (distinct lavfi scenes, some later windows of the same scene) and copies
(CRF 35 re-encode, 50-75% rescale, crop up to 10%, brightness +-0.08, trim up to 1 s, and
combinations; see tests.gen.dupset). Pairwise precision / recall over all pairs (a pair
is a true duplicate when both derive from one original), per signal:
  fingerprint (Chamfer Hamming on frame hashes, <= --fp-bits), fingerprint_vec (cosine),
  CLIP embedding (whatever weights are available: random unless SILA_CLIP_WEIGHTS is set),
  and the `fpdedup` stage run on a lake (k-means + within-cluster) vs. exact all-pairs.
Scale: the `dedup` stage (fit + per-fragment assign) on N x 512 clustered vectors with
injected near-copies, vs. exact all-pairs cosine timed on a subset and extrapolated (N^2).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time

import numpy as np

from bench._util import report


def pair_scores(pred: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float]:
    tp = len(pred & truth)
    return (tp / len(pred) if pred else 1.0), (tp / len(truth) if truth else 1.0)


def _pairs(n: int, same) -> set[tuple[int, int]]:
    return {(i, j) for i, j in itertools.combinations(range(n), 2) if same(i, j)}


def accuracy(args, work: str) -> None:
    from sila.stages.fingerprint import clip_distance, fingerprint_file

    import sila
    from tests.clip_lake import clips_table
    from tests.gen.dupset import make_dupset

    t0 = time.perf_counter()
    clips = make_dupset(
        os.path.join(work, "media"), originals=args.originals, variants=args.variants
    )
    n = len(clips)
    print(
        f"# {n} clips ({args.originals} originals x {args.variants} copies), made in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    truth = _pairs(n, lambda i, j: clips[i].group == clips[j].group)
    hashes = [fingerprint_file(c.path) for c in clips]
    dist = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        dist[i, j] = dist[j, i] = clip_distance(hashes[i], hashes[j])
    pred = _pairs(n, lambda i, j: dist[i, j] <= args.fp_bits)
    p, r = pair_scores(pred, truth)
    report(
        "dedup_fingerprint_precision",
        p,
        0.99,
        "",
        f"Chamfer Hamming <= {args.fp_bits} bits; ref = target",
    )
    report("dedup_fingerprint_recall", r, 0.95, "", "ref = target")
    copies = {(i, j) for (i, j) in truth if "original" in (clips[i].transform, clips[j].transform)}
    report(
        "dedup_fingerprint_recall_copy_vs_original",
        len(pred & copies) / len(copies),
        0.95,
        "",
        "pairs with the original only",
    )
    by_kind: dict[str, list[bool]] = {}
    for i, j in copies:
        kind = clips[j].transform if clips[i].transform == "original" else clips[i].transform
        for part in kind.split("+"):
            by_kind.setdefault("".join(c for c in part if c.isalpha()), []).append((i, j) in pred)
    print(
        "# fingerprint recall vs original by transform: "
        + ", ".join(f"{k} {np.mean(v):.2f} ({len(v)})" for k, v in sorted(by_kind.items()))
    )
    worst_same = max(dist[i, j] for i, j in truth)
    best_other = min(
        dist[i, j] for i, j in itertools.combinations(range(n), 2) if (i, j) not in truth
    )
    print(
        f"# fingerprint distances: largest between copies {worst_same:.1f} bits, smallest between different clips {best_other:.1f}"
    )

    # the stages on a lake: fingerprint + fpdedup (k-means + within-cluster) and embed + dedup
    lake = sila.Lake(os.path.join(work, "lake")).init()
    clips_table(lake, clips, rows_per_fragment=32, bad=False)
    lake.run("fingerprint")
    signals = [("fpdedup", "fingerprint_vec", args.fp_eps)]
    if not args.skip_clip:
        signals.append(("embed", "embedding", args.clip_eps))
    for spec, vec, eps in signals:
        if spec == "embed":
            t = time.perf_counter()
            lake.run("embed", settings={"frames": 4}, allow_random_weights=True)
            print(f"# embed on {n} clips: {time.perf_counter() - t:.0f} s", flush=True)
            lake.run("dedup", settings={"eps": eps, "quality": "video_bytes"})
            prefix, label = "dedup", "clip"
            meta = lake.table("clips").schema.field("embedding").metadata or {}
            weights = (
                "RANDOM weights"
                if meta.get(b"sila.random_weights") == b"true"
                else meta.get(b"sila.model", b"?").decode()
            )
        else:
            lake.run("fpdedup", settings={"eps": eps, "quality": "video_bytes"})
            prefix, label, weights = "fpdedup", "fingerprint_vec", "no weights"
        rows = lake.table("clips").to_table(columns=["id", vec, f"{prefix}_group"]).to_pylist()
        index = {f"src{c.group}/{i}": i for i, c in enumerate(clips)}
        group = {index[r["id"]]: r[f"{prefix}_group"] for r in rows}
        stage_pred = _pairs(n, lambda i, j, g=group: g[i] == g[j])
        v = np.array([r[vec] for r in sorted(rows, key=lambda r: index[r["id"]])], np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        s = v @ v.T
        exact_pred = _pairs(n, lambda i, j, s=s, eps=eps: s[i, j] >= 1 - eps)
        sp, sr = pair_scores(stage_pred, truth)
        ep, er = pair_scores(exact_pred, truth)
        report(
            f"dedup_{label}_stage_precision",
            sp,
            ep,
            "",
            f"{prefix} stage (k-means + groups) vs exact all-pairs cosine >= {1 - eps}; {weights}",
        )
        report(f"dedup_{label}_stage_recall", sr, er, "", f"{weights}")


def scale(args, work: str) -> None:
    from sila.retrieval.semdedup import pairs_exact

    import sila
    from bench.search import clustered, write_table
    from sila.global_stage import FitStore

    n, dim = args.scale_rows, 512
    rng = np.random.default_rng(3)
    base = clustered(n, dim, clusters=max(10, n // 1000), seed=11)
    dup = rng.choice(n, n // 10, replace=False)  # 10% of the rows are near-copies of another
    src = rng.choice(n, len(dup))
    base[dup] = base[src] + rng.standard_normal((len(dup), dim)).astype(np.float32) * (
        0.01 / np.sqrt(dim)
    )
    base[dup] /= np.linalg.norm(base[dup], axis=1, keepdims=True)
    lake = sila.Lake(os.path.join(work, "scale")).init()
    write_table(lake, base)
    # the scale table has no embed stage: adopt its column as embed's (metadata only)
    ds = lake.table("clips")
    ds.update_field_metadata({"embedding": {"sila.stage": "embed", "sila.stage_version": "1"}})
    t0 = time.perf_counter()
    job = lake.run("dedup", settings={"eps": 0.02}, workers=1)
    ours = time.perf_counter() - t0
    fit = FitStore(lake, "clips", "dedup").current()
    print(
        f"# dedup stage on {n} x {dim}: fit {fit.summary['fit_s']} s ({fit.summary['clusters']} clusters, k-means on "
        f"{fit.summary['sample_rows']}), total with assign {ours:.1f} s, {job['progress']['fragments_done']} fragments; "
        f"removed {fit.summary['removed']} (injected {len(dup)} near-copies)",
        flush=True,
    )
    sub = min(n, args.exact_subset)
    t0 = time.perf_counter()
    pairs_exact(base[:sub], 0.02)
    t_sub = time.perf_counter() - t0
    ref = t_sub * (n / sub) ** 2
    report(
        "dedup_scale_s",
        ours,
        ref,
        "s",
        f"ref = exact all-pairs: {t_sub:.1f} s on {sub} rows x (N/{sub})^2 (extrapolated)",
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench dedup")
    ap.add_argument("--originals", type=int, default=40)
    ap.add_argument("--variants", type=int, default=5)
    ap.add_argument("--fp-bits", type=float, default=14.0)
    ap.add_argument("--fp-eps", type=float, default=0.35)
    ap.add_argument("--clip-eps", type=float, default=0.05)
    ap.add_argument("--scale-rows", type=int, default=1_000_000)
    ap.add_argument("--exact-subset", type=int, default=20_000)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-clip", action="store_true", help="no embed + dedup (ViT-B-32 on CPU)")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="sila-bench-dedup-")
    try:
        if not args.skip_accuracy:
            accuracy(args, work)
        if not args.skip_scale:
            scale(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
