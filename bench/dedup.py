"""Dedup accuracy on a generated set with known truth, and dedup at scale.

`python -m bench dedup [--originals 40] [--variants 5] [--scale-rows 1000000] [--skip-scale]`

Accuracy: originals (distinct lavfi scenes, some later windows of the same scene) and copies
(CRF 35 re-encode, 50-75% rescale, crop up to 10%, brightness +-0.08, trim up to 1 s, and
combinations; see tests.gen.dupset). Pairwise precision / recall over all pairs (a pair
is a true duplicate when both derive from one original), per signal:
  fingerprint (Chamfer Hamming on frame hashes, <= --fp-bits), fingerprint_vec (cosine),
  CLIP embedding (whatever weights are available: random unless SILA_CLIP_WEIGHTS is set),
  and the `fpdedup` stage run on a lake (k-means + within-cluster) vs. exact all-pairs.
Scale: the `dedup` fit on N x 512 clustered vectors with injected near-copies, in a fresh
process (time and peak RSS against the N x D x 8 bytes a fit holding every vector needs), the
lookup pass, and the update after 1% more rows arrive; exact all-pairs cosine timed on a subset
and extrapolated (N^2) for reference.
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


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM), MB."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def fit_child(lake_uri: str, settings: str) -> None:
    """In a fresh process: the dedup fit step alone (a fit, or an update when one exists);
    prints one JSON line: seconds, peak RSS and the RSS the imports alone take."""
    import json

    import faiss  # noqa: F401  (imported before the baseline: it is not the fit's memory)
    import lance  # noqa: F401
    from sila.coordinator.global_fit import ensure_fit
    from sila.stages.dedup import Dedup

    import sila
    from sila.global_stage import FitStore

    lake = sila.Lake(lake_uri)
    stage = Dedup(**json.loads(settings))
    base = _peak_mb()
    t0 = time.perf_counter()
    ensure_fit(lake, Dedup, stage, recompute=False)
    s = FitStore(lake, "clips", "dedup").current().summary
    print(json.dumps({"s": time.perf_counter() - t0, "peak_mb": _peak_mb(), "base_mb": base,
                      "summary": {k: v for k, v in s.items() if k != "sweep"}}))  # fmt: skip


def _fit_in_child(lake_uri: str, settings: dict) -> dict:
    import json
    import subprocess
    import sys

    code = f"from bench.dedup import fit_child; fit_child({lake_uri!r}, {json.dumps(settings)!r})"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=os.getcwd()
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _near_copies(base: np.ndarray, n: int, rng) -> np.ndarray:
    src = rng.choice(len(base), n)
    x = base[src] + rng.standard_normal((n, base.shape[1])).astype(np.float32) * (
        0.01 / np.sqrt(base.shape[1])
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def scale(args, work: str) -> None:
    """The fit's time and peak memory at N x 512 (each in a fresh process), the assign pass,
    then an update after 1% of near-copies arrive; exact all-pairs extrapolated for reference."""
    import lance
    import pyarrow as pa
    from sila.retrieval.semdedup import pairs_exact

    import sila
    from bench.search import clustered, write_table

    n, dim = args.scale_rows, 512
    rng = np.random.default_rng(3)
    base = clustered(n, dim, clusters=max(10, n // 1000), seed=11)
    dup = rng.choice(n, n // 10, replace=False)  # 10% of the rows are near-copies of another
    base[dup] = _near_copies(base, len(dup), rng)
    lake = sila.Lake(os.path.join(work, "scale")).init()
    write_table(lake, base)
    # the scale table has no embed stage: adopt its column as embed's (metadata only)
    ds = lake.table("clips")
    ds.update_field_metadata({"embedding": {"sila.stage": "embed", "sila.stage_version": "1"}})
    sub = min(n, args.exact_subset)
    exact_rows, arrivals = base[:sub].copy(), _near_copies(base, n // 100, rng)
    del base  # the fit must not lean on this process's copy: it runs in a fresh one
    settings = {"eps": 0.02}
    fit = _fit_in_child(lake.uri, settings)
    s = fit["summary"]
    sample = s["sample_rows"]
    fit_mb = fit["peak_mb"] - fit["base_mb"]
    whole = n * dim * 4 * 2 / 2**20  # the former fit: every vector read, then normalised
    bound = (sample * dim * 4 * 2 + n * 120 + 4096 * dim * 4 * 8) / 2**20
    print(
        f"# dedup fit on {n} x {dim}: {fit['s']:.1f} s, {s['clusters']} clusters (k-means on {sample}), "
        f"removed {s['removed']} (injected {len(dup)} near-copies); peak RSS {fit['peak_mb']:.0f} MB, "
        f"{fit_mb:.0f} MB above the imports' {fit['base_mb']:.0f} MB; predicted bound (sample x D x 8 "
        f"+ N x 120 B + the scan batches in flight) {bound:.0f} MB + the largest cluster",
        flush=True,
    )
    report("dedup_fit_peak_mb", fit_mb, whole, "MB",
           "ref = N x D x 8 bytes (all vectors, read and normalised): the former fit's floor")  # fmt: skip
    t0 = time.perf_counter()
    job = lake.run("dedup", settings=settings, workers=1)
    assign_s = time.perf_counter() - t0
    print(f"# assign pass (lookups): {assign_s:.1f} s, {job['progress']['fragments_done']} "
          "fragments", flush=True)  # fmt: skip
    schema = lake.table("clips").schema
    k = len(arrivals)
    lance.write_dataset(
        pa.table({"id": pa.array([f"new{i}" for i in range(k)]),
                  "bucket": pa.array(np.zeros(k, np.int32)),
                  "embedding": pa.FixedSizeListArray.from_arrays(pa.array(arrivals.ravel()), dim)}
                 ).cast(pa.schema([schema.field(c) for c in ("id", "bucket", "embedding")])),
        lake.table_uri("clips"), mode="append",
    )  # fmt: skip
    upd = _fit_in_child(lake.uri, settings)
    u = upd["summary"]
    print(
        f"# update after {k} arrivals (near-copies): {upd['s']:.1f} s, {u['regrouped_clusters']} "
        f"clusters regrouped, {u['changed_rows']} stored answers changed, peak RSS "
        f"{upd['peak_mb']:.0f} MB ({upd['peak_mb'] - upd['base_mb']:.0f} MB above the imports)",
        flush=True,
    )
    t0 = time.perf_counter()
    pairs_exact(exact_rows, 0.02)
    t_sub = time.perf_counter() - t0
    ref = t_sub * (n / sub) ** 2
    report(
        "dedup_scale_s",
        fit["s"] + assign_s,
        ref,
        "s",
        f"fit + assign; ref = exact all-pairs: {t_sub:.1f} s on {sub} rows x (N/{sub})^2 (extrapolated)",
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
