"""Endpoint saturation of the caption stage: rows/s against a server with a fixed per-request
latency and a concurrency limit (the OpenAI TEST DOUBLE, tests/openai_test_server.py, run as
its own process), vs. the server's ideal (limit / latency) and vs. sequential calls.

Few small frames per request, so the server and not this machine is the limit.

    python -m bench caption_saturation [--rows 160] [--latency 1.0] [--limit 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench._util import report

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tests" / "openai_test_server.py"


def start_server(port: int, latency: float, limit: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", str(port), "--model", "bench-double",
         "--latency", str(latency), "--max-concurrency", str(limit), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the test double did not start")


def timed_run(lake_dir: Path, videos: list[bytes], url: str, **kw) -> tuple[float, dict]:
    from sila.stages.caption.stage import Caption

    import sila
    from tests.stages.caption_helpers import write_clips

    lake = sila.Lake(lake_dir).init()
    write_clips(lake, videos)
    settings = {"fps": 2.0, "max_frames": 2, "frame_max_side": 64, **kw.pop("settings", {})}
    t0 = time.perf_counter()
    job = lake.run(Caption, endpoint_url=url, settings=settings, **kw)
    took = time.perf_counter() - t0
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0, job["message"]
    return took, job


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=160)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--port", type=int, default=18431)
    args = ap.parse_args(argv)
    from sila.endpoints.process import free_port
    from tests.stages.caption_helpers import make_media

    port = args.port or free_port()
    proc = start_server(port, args.latency, args.limit)
    url = f"http://127.0.0.1:{port}/v1"
    ideal = args.limit / args.latency
    try:
        with tempfile.TemporaryDirectory(prefix="sila-bench-caption-") as tmp:
            media = make_media(Path(tmp) / "media", n_videos=4, size="64x48")
            videos = [media[f"v{i % 4}"] for i in range(args.rows)]
            seq_rows = max(4, args.limit)
            seq_s, _ = timed_run(
                Path(tmp) / "seq", videos[:seq_rows], url, settings={"concurrency": 1}
            )
            seq = seq_rows / seq_s
            # concurrency = the server's limit, and twice it (requests wait in the server's
            # queue, so a slot never idles while the stage prepares its next segment)
            runs = [
                ("inline_conc1x", {"settings": {"concurrency": args.limit}}),
                ("inline_conc2x", {"settings": {"concurrency": 2 * args.limit}}),
            ]
            for name, kw in runs:
                took, job = timed_run(Path(tmp) / name, videos, url, **kw)
                rate = args.rows / took
                report(
                    f"caption_saturation_{name}",
                    rate,
                    ideal,
                    unit="rows/s",
                    note=f"{args.rows} rows in {took:.1f} s; server ideal = {args.limit} "
                    f"slots / {args.latency:g} s",
                )
                report(f"caption_vs_sequential_{name}", rate, seq, unit="rows/s")
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
