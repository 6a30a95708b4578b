"""The same coordinator on an S3 server (moto, loopback) vs. a local directory, on one table of
1,000 fragments: discovery time, lease claim latency, commit throughput, and object-store
requests per fragment processed (SILA's own lease/checkpoint/job requests, and all HTTP
requests the S3 server saw, Lance's included)."""

from __future__ import annotations

import argparse  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import lance  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from sila.coordinator.discovery import split_fragments  # noqa: E402
from sila.coordinator.leases import LeaseStore  # noqa: E402
from sila.coordinator.store import Store  # noqa: E402

import sila  # noqa: E402
from bench._util import report  # first: sets LANCE_LOG

STAGE = """
import pyarrow as pa, pyarrow.compute as pc
from sila import Stage
class Score(Stage):
    name = "score"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("score", pa.float64())]
    def compute(self, batch):
        return {"score": pc.add(pc.multiply(batch["x"], 2.0), 1.0)}
"""


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),  # noqa: SIM115 - the server writes its access log here until stopped
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return p, f"http://127.0.0.1:{port}"


def http_requests(log: Path) -> Counter:
    return Counter(
        m.group(1) for m in re.finditer(r'"(GET|PUT|POST|DELETE|HEAD) ', log.read_text())
    )


def measure(lake: sila.Lake, stage: str, fragments: int, rows: int, log: Path | None) -> dict:
    n = fragments * rows
    lance.write_dataset(
        pa.table({"id": np.arange(n).astype(str), "x": np.arange(n, dtype=np.float64)}),
        lake.table_uri("nums"),
        max_rows_per_file=rows,
        storage_options=lake.storage_options or None,
    )
    t0 = time.perf_counter()
    _, pending = split_fragments(lake.table("nums"), "score")
    discovery = time.perf_counter() - t0
    ls = LeaseStore(lake.store, ttl=60)
    t0 = time.perf_counter()
    for ref in pending[:50]:
        ls.release(ls.acquire("bench", "claim", ref.key, owner="b", job="b"), committed=True)
    claim = (time.perf_counter() - t0) / 50
    Store.requests.clear()
    before = http_requests(log) if log else Counter()
    t0 = time.perf_counter()
    job = lake.run(stage)
    run_s = time.perf_counter() - t0
    assert job["progress"]["rows"] == n
    ours = dict(Store.requests)
    http = http_requests(log) - before if log else Counter()
    return {
        "discovery": discovery,
        "claim": claim,
        "fps": fragments / run_s,
        "ours": ours,
        "http": http,
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench object_store")
    ap.add_argument("--fragments", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=10)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        stage = Path(d) / "score.py"
        stage.write_text(STAGE)
        log = Path(d) / "moto.log"
        proc, endpoint = start_moto(log)
        try:
            import boto3

            bucket = "bench-" + uuid.uuid4().hex[:8]
            opts = {
                "aws_endpoint": endpoint,
                "allow_http": "true",
                "aws_region": "us-east-1",
                "aws_access_key_id": "x",
                "aws_secret_access_key": "x",
            }
            boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id="x",
                aws_secret_access_key="x",
                region_name="us-east-1",
            ).create_bucket(Bucket=bucket)
            s3 = measure(
                sila.Lake(f"s3://{bucket}/lake", storage_options=opts),
                f"{stage}:Score",
                a.fragments,
                a.rows,
                log,
            )
            local = measure(sila.Lake(f"{d}/lake"), f"{stage}:Score", a.fragments, a.rows, None)
        finally:
            proc.terminate()
    f = a.fragments
    report(f"discovery_{f}_fragments_s3_vs_local", s3["discovery"], local["discovery"])
    report("lease_claim_s3_vs_local", s3["claim"] * 1000, local["claim"] * 1000, unit="ms")
    report("commit_throughput_s3_vs_local", s3["fps"], local["fps"], unit=" fragments/s")
    for kind in ("list", "get", "put", "delete"):
        print(
            f"# sila requests per fragment ({kind}): s3={s3['ours'].get(kind, 0) / f:.2f} "
            f"local={local['ours'].get(kind, 0) / f:.2f}"
        )
    total_http = sum(s3["http"].values())
    print(
        f"# all HTTP requests the S3 server saw during the run, per fragment: {total_http / f:.2f} "
        + " ".join(f"{k}={v / f:.2f}" for k, v in sorted(s3["http"].items()))
    )
    report(
        "sila_requests_per_fragment_vs_all_http",
        sum(s3["ours"].values()) / f,
        total_http / f,
        unit="",
        note="SILA's own share of the object-store traffic",
    )
    return 0
