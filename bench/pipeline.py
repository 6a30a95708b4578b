"""`sila pipeline run` (stages as concurrent lease-coordinated jobs, downstream taking fragments
as upstream commits them) vs. the same stages run one after the other, on the demo corpus.

    python -m bench pipeline [--recipe demo] [--small]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench._util import report


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench pipeline")
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--full", action="store_true", help="the full demo corpus (default: small)")
    args = ap.parse_args(argv)
    from sila.coordinator.ops.pipeline import plan, recipe_stages

    import sila
    from sila.demo.corpus import make_corpus
    from sila.recipe import load_recipe

    with tempfile.TemporaryDirectory(prefix="sila-bench-pipeline-") as d:
        files = make_corpus(os.path.join(d, "media"), small=not args.full)
        lakes = {k: sila.Lake(os.path.join(d, k)).init() for k in ("pipe", "seq")}
        for lk in lakes.values():
            lk.ingest(files)
        opts = {"allow_random_weights": True}
        t = time.perf_counter()
        res = lakes["pipe"].pipeline(args.recipe, **opts)
        ours = time.perf_counter() - t
        names = [n.spec for n in plan(recipe_stages(load_recipe(args.recipe)))]
        t = time.perf_counter()
        for spec in names:
            try:
                lakes["seq"].run(spec, recipe=args.recipe, **opts)
            except sila.SilaError as e:  # a stage the demo skips (e.g. no endpoint)
                print(f"  sequential: {spec} skipped: {str(e)[:100]}")
        ref = time.perf_counter() - t
    for s in res["stages"]:
        print(f"  {s['stage']}: {s['state']} {s['rows']} rows {s['seconds']} s {s['message'][:80]}")
    report(
        "pipeline_wall_s",
        ours,
        ref,
        "s",
        f"{len(names)} stages; ratio = pipeline / one after the other (target <= 0.9)",
    )
    return 0
