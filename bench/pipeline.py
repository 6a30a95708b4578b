"""`sila pipeline run` (stages as concurrent lease-coordinated jobs, downstream taking fragments
as upstream commits them) vs. `--sequential`, on the demo corpus; then the re-run with nothing
to do (target < 5 s, no job records written, torch not imported by the re-run's judging).

    python -m bench pipeline [--recipe demo] [--full]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench._util import report


def main(argv: list[str]) -> int:
    """Time a concurrent and a sequential pipeline run on two lakes, then a no-op re-run."""
    ap = argparse.ArgumentParser(prog="bench pipeline")
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--full", action="store_true", help="the full demo corpus (default: small)")
    args = ap.parse_args(argv)

    import sila
    from sila.demo.corpus import make_corpus

    with tempfile.TemporaryDirectory(prefix="sila-bench-pipeline-") as d:
        files = make_corpus(os.path.join(d, "media"), small=not args.full)
        lakes = {k: sila.Lake(os.path.join(d, k)).init() for k in ("pipe", "seq")}
        for lk in lakes.values():
            lk.ingest(files)
        opts = {"random_weights": True}
        t = time.perf_counter()
        res = lakes["pipe"].pipeline(args.recipe, **opts)
        ours = time.perf_counter() - t
        t = time.perf_counter()
        seq = lakes["seq"].pipeline(args.recipe, concurrent=False, **opts)
        ref = time.perf_counter() - t
        jobs = len(lakes["pipe"].jobs())
        t = time.perf_counter()
        again = lakes["pipe"].pipeline(args.recipe, **opts)
        noop = time.perf_counter() - t
        added = len(lakes["pipe"].jobs()) - jobs
    for s in res["stages"]:
        print(
            f"  {s['stage']}: {s['state']} {s['rows']} rows, {len(s['jobs'])} job(s), "
            f"{s['polls']} poll(s), {s['seconds']} s {s['message'][:60]}"
        )
    print(f"  sequential ok={seq['ok']}; re-run ran {again['ran']} and wrote {added} job records")
    report(
        "pipeline_wall_s",
        ours,
        ref,
        "s",
        f"{len(res['stages'])} stages; ratio = concurrent / --sequential (target <= 0.9)",
    )
    report("pipeline_noop_rerun_s", noop, 5.0, "s", "re-run with nothing to do (target < 5 s)")
    return 0
