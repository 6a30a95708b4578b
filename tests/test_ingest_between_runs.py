"""What users do between runs: kill an ingest and run it again; ingest while a stage runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ingest_gen import png_bytes

import sila

SILA = str(Path(sys.executable).parent / "sila")


def folder(root: Path, n: int, start: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (root / f"f{i:05d}.png").write_bytes(png_bytes(i))
    return root


@pytest.mark.slow
def test_killed_ingest_resumes_without_duplicates(tmp_path):
    src = folder(tmp_path / "src", 1500)
    lake = sila.Lake(tmp_path / "lake")
    cmd = [SILA, "ingest", str(src), "--lake", lake.uri, "--rows-per-fragment", "8", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if lake.has_table("sources") and lake.table("sources").count_rows() > 0:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-ingest: some fragments committed, some not
    finally:
        proc.wait(timeout=30)
    first = lake.table("sources").count_rows()
    assert 0 < first < 1500, "the kill should land between the first and the last commit"
    rep = lake.ingest([src], rows_per_fragment=8)
    assert rep.present == first and rep.added == 1500 - first
    ids = lake.table("sources").to_table(columns=["id"])["id"].to_pylist()
    assert len(ids) == len(set(ids)) == 1500
    paths = lake.table("source_paths").to_table(columns=["path"])["path"].to_pylist()
    assert len(paths) == len(set(paths)) == 1500
    assert max(f.count_rows() for f in lake.table("sources").get_fragments()) == 8


@pytest.mark.slow
def test_ingest_while_a_stage_runs(tmp_path):
    lake = sila.Lake(tmp_path / "lake")
    lake.ingest([folder(tmp_path / "a", 40)], rows_per_fragment=10)
    job = subprocess.Popen(
        [SILA, "run", "thumbnail", "--lake", lake.uri, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        b = folder(tmp_path / "b", 40, start=40)
        m = b / "m.jsonl"  # a new meta column too: a schema change while the job commits
        m.write_text("".join(f'{{"path": "{p.name}", "label": "n{i}"}}\n'
                             for i, p in enumerate(sorted(b.glob("*.png")))))  # fmt: skip
        rep = lake.ingest([m], rows_per_fragment=10)
        out, err = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert rep.added == 40 and rep.fragments == 4
    assert job.returncode == 0, err[-2000:]
    lake.run("thumbnail")  # whatever the first job did not see is computed now, once
    t = lake.table("sources").to_table(columns=["thumbnail", "thumbnail_error"])
    assert t.num_rows == 80 and t["thumbnail"].null_count == 0
    assert t["thumbnail_error"].null_count == 80
    assert lake.sql("select count(meta_label) as n from sources")["n"][0].as_py() == 40
