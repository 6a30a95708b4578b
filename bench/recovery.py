"""Coordinator recovery and start-up: after a SIGKILL, time until another worker resumes the
fragment (≈ lease TTL) and the fraction of work redone; and the time from `sila run` to the
first fragment claimed on a table of 10,000 fragments."""

from __future__ import annotations

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import lance  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from bench._util import report  # first: sets LANCE_LOG

STAGE = """
import time, pyarrow as pa
from sila import Stage
class Slow(Stage):
    name = "slow"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("y", pa.float64())]
    segment_rows = 25
    def compute(self, batch):
        time.sleep(0.05)
        return {"y": [x + 1 for x in batch["x"].to_pylist()]}
"""
SILA = str(Path(sys.executable).parent / "sila")


def lease_files(lake: str) -> list[dict]:
    out = []
    for root, _, files in os.walk(os.path.join(lake, "_sila", "leases")):
        out += [json.loads(Path(root, f).read_text()) for f in files]
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench recovery")
    ap.add_argument("--ttl", type=float, default=3.0)
    ap.add_argument("--startup-fragments", type=int, default=10_000)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        stage = Path(d) / "slow.py"
        stage.write_text(STAGE)
        lake = f"{d}/lake"
        rows, per_frag = 200, 200 // 25
        lance.write_dataset(
            pa.table({"id": np.arange(rows).astype(str), "x": np.arange(rows, dtype=np.float64)}),
            f"{lake}/nums.lance",
            max_rows_per_file=rows,
        )
        cmd = [
            SILA,
            "run",
            f"{stage}:Slow",
            "--lake",
            lake,
            "--json",
            "--lease-ttl",
            str(a.ttl),
            "--checkpoint-min-s",
            "0",
        ]
        killed = subprocess.run(
            cmd, capture_output=True, env={**os.environ, "SILA_FAULT": "after_checkpoint:5"}
        )
        t_kill = time.time()
        assert killed.returncode != 0
        first = lease_files(lake)[0]
        res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        newest = max(lease_files(lake), key=lambda x: x["gen"])
        resumed_after = newest["acquired_at"] - first["renewed_at"]
        computed = res["progress"]["segments_computed"]
        redone = computed - (per_frag - res["progress"]["segments_reused"])
        report(
            "resume_after_sigkill_vs_ttl",
            resumed_after,
            a.ttl,
            note=f"from the dead owner's last heartbeat to the new claim ({time.time() - t_kill:.1f} s incl. the rerun)",
        )
        report(
            "work_redone_vs_one_segment",
            max(redone, 0) / per_frag,
            1 / per_frag,
            unit="",
            note=f"segments reused {res['progress']['segments_reused']}/{per_frag}, computed {computed}",
        )

        big = f"{d}/big"
        n = a.startup_fragments
        lance.write_dataset(
            pa.table({"id": np.arange(n * 2).astype(str), "x": np.arange(n * 2, dtype=np.float64)}),
            f"{big}/nums.lance",
            max_rows_per_file=2,
        )
        t0 = time.time()
        p = subprocess.Popen(
            [SILA, "run", f"{stage}:Slow", "--lake", big, "--json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        leases = os.path.join(big, "_sila", "leases")
        while not any(f for _, _, f in os.walk(leases)):
            time.sleep(0.01)
            if time.time() - t0 > 120:
                break
        first_claim = time.time() - t0
        p.kill()
        p.wait()
        report(
            f"first_claim_{n}_fragments_vs_5s_target",
            first_claim,
            5.0,
            note="sila run start (process, imports, schema, discovery) to first lease",
        )
    return 0
