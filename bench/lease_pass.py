"""A pass over a 10,000-fragment table whose stage is done for all but one fragment, local and
on S3 (moto, loopback), before vs. after lease-file removal, in one run.

"Before" is the layout older SILA left: one committed lease file per fragment ever processed
(`leases/nums/score/<fragment>/00000001.json`). "After" is what a commit leaves now: nothing.
Measured on the same table: the whole `sila run` pass (discovery, claim, compute, commit), the
lease listing a worker pass makes when more than 8 fragments are pending (`busy`), and the one
`sila status` / `doctor` / `gc` make (`live`). Seconds, SILA's own store requests, and on S3
every HTTP request the server saw (Lance's too).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")  # before lance loads

import lance  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from sila.coordinator.discovery import fragment_ref  # noqa: E402
from sila.coordinator.leases import COMMITTED, LeaseStore  # noqa: E402
from sila.coordinator.store import Store  # noqa: E402

import sila  # noqa: E402
from bench._util import report  # noqa: E402
from bench.object_store import http_requests, start_moto  # noqa: E402

STAGE = """
import pyarrow as pa, pyarrow.compute as pc
from sila import Stage
class Score(Stage):
    name = "score"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("score", pa.float64())]
    def compute(self, batch):
        return {"score": pc.add(pc.multiply(batch["x"], 2.0), 1.0)}
"""


def build(root: Path, stage: str, fragments: int, rows: int) -> sila.Lake:
    """A local lake whose `score` is done on `fragments - 1` fragments (computed for real)."""
    lake = sila.Lake(root / "lake").init()
    n = (fragments - 1) * rows
    lance.write_dataset(
        pa.table({"id": np.arange(n).astype(str), "x": np.arange(n, dtype=np.float64)}),
        lake.table_uri("nums"),
        max_rows_per_file=rows,
    )
    lake.run(stage, commit_batch=1024)
    append_one(lake, "pending-0")
    return lake


def append_one(lake: sila.Lake, tag: str) -> None:
    """One new fragment the stage has not seen: the pass's only work."""
    lance.write_dataset(
        pa.table({"id": [f"{tag}-{i}" for i in range(10)], "x": np.arange(10, dtype=np.float64)}),
        lake.table_uri("nums"),
        mode="append",
        storage_options=lake.storage_options or None,
    )


def old_lease_files(lake: sila.Lake) -> dict[str, bytes]:
    """What older SILA left behind: one committed lease file per fragment it ever finished."""
    out = {}
    for frag in lake.table("nums").get_fragments():
        key = fragment_ref(frag).key
        body = {
            "table": "nums",
            "stage": "score",
            "fragment": key,
            "gen": 1,
            "owner": "old-host:1:abcdef01",
            "job": "old-job",
            "state": COMMITTED,
            "expires_at": 0.0,
        }
        out[f"leases/nums/score/{key}/00000001.json"] = json.dumps(body).encode()
    return out


def measure(lake: sila.Lake, stage: str, log: Path | None) -> dict:
    res: dict = {}
    for name, fn in (
        ("run", lambda: lake.run(stage)),
        ("busy", lambda: LeaseStore(lake.store).busy("nums", "score")),
        ("live", lambda: LeaseStore(lake.store).live()),
    ):
        Store.requests.clear()
        before = http_requests(log) if log else Counter()
        t0 = time.perf_counter()
        out = fn()
        took = time.perf_counter() - t0
        if name == "run":
            assert out["progress"]["fragments_done"] == 1, out["progress"]
        res[name] = (
            took,
            sum(Store.requests.values()),
            sum((http_requests(log) - before).values()) if log else 0,
        )
    return res


def compare(where: str, lake: sila.Lake, stage: str, files: dict[str, bytes], put, log) -> None:
    for key, body in files.items() if put is None else ():
        lake.store.put(key, body)
    if put is not None:
        put(files)
    lake.run(stage)  # warm-up: the first pass after the copy pays one-off costs
    append_one(lake, "pending-0b")
    before = measure(lake, stage, log)
    for key in files:  # lease-file removal: what a commit does now (the file, then its dir)
        lake.store.delete(key)
        lake.store.prune_dir(key.rsplit("/", 1)[0])
    assert lake.store.list("leases") == []
    append_one(lake, "pending-1")
    after = measure(lake, stage, log)
    n = len(files)
    notes = {
        "run": "whole `sila run` pass: 1 pending fragment",
        "busy": "lease listing of a worker pass (> 8 pending)",
        "live": "`sila status` / doctor / gc lease listing",
    }
    for name in ("run", "busy", "live"):
        (ta, ra, ha), (tb, rb, hb) = after[name], before[name]
        report(
            f"lease_pass_{where}_{name}_s", ta, tb, note=f"{notes[name]}; ref: {n} old lease files"
        )
        report(f"lease_pass_{where}_{name}_sila_requests", ra, rb, unit="")
        if log:
            report(f"lease_pass_{where}_{name}_http_requests", ha, hb, unit="")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench lease_pass")
    ap.add_argument("--fragments", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--where", choices=["both", "local", "s3"], default="both")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "score.py").write_text(STAGE)
        stage = f"{root / 'score.py'}:Score"
        t0 = time.perf_counter()
        local = build(root, stage, a.fragments, a.rows)
        print(f"# built {a.fragments} fragments in {time.perf_counter() - t0:.1f}s", flush=True)
        files = old_lease_files(local)
        if a.where == "local":
            compare("local", local, stage, files, None, None)
            return 0
        log = root / "moto.log"
        proc, endpoint = start_moto(log)
        try:
            import boto3

            s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id="x",
                aws_secret_access_key="x",
                region_name="us-east-1",
            )
            bucket = "bench-" + uuid.uuid4().hex[:8]
            s3.create_bucket(Bucket=bucket)
            opts = {
                "aws_endpoint": endpoint,
                "allow_http": "true",
                "aws_region": "us-east-1",
                "aws_access_key_id": "x",
                "aws_secret_access_key": "x",
            }

            def upload(pairs) -> None:
                with ThreadPoolExecutor(16) as pool:
                    list(
                        pool.map(
                            lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), pairs
                        )
                    )

            lake_dir = Path(local.uri)
            v = local.table("nums").version  # its manifest: "<v>" or inverted "<2^64-1-v>"
            latest = {
                lake_dir / "nums.lance" / "_versions" / f"{n}.manifest" for n in (v, 2**64 - 1 - v)
            }
            upload(  # the same lake, object by object (Lance paths are relative); old versions
                (f"lake/{p.relative_to(lake_dir)}", p.read_bytes())  # and job records not needed
                for p in lake_dir.rglob("*")
                if p.is_file()
                and (p.parent.name != "_versions" or p in latest)
                and p.parent.name not in ("_transactions", "jobs")
            )
            remote = sila.Lake(f"s3://{bucket}/lake", storage_options=opts)
            print(f"# copied to S3 in {time.perf_counter() - t0:.1f}s", flush=True)
            compare(
                "s3",
                remote,
                stage,
                files,
                lambda fs: upload((f"lake/_sila/{k}", v) for k, v in fs.items()),
                log,
            )
        finally:
            proc.terminate()
        if a.where == "both":
            compare("local", local, stage, files, None, None)
    return 0
