"""The spine on both backends, a local directory and an S3 server (moto): discovery, leases
under contention, SIGKILL then resume, idempotent re-runs, concurrent jobs, appends, errors."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import lance
import pyarrow as pa
import pytest
from sila.coordinator.discovery import split_fragments
from sila.coordinator.leases import LeaseStore

import sila
from tests.conftest import BIN, make_numbers, sila_run_cmd

STAGE = """
import time
import pyarrow as pa
from sila import Stage

class Plus(Stage):
    name = "plus"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("p", pa.float64())]
    segment_rows = 20
    def compute(self, batch):
        time.sleep(0.03)
        return {"p": [x + 100 for x in batch["x"].to_pylist()]}
"""


@pytest.fixture
def stage(tmp_path):
    p = tmp_path / "plus.py"
    p.write_text(STAGE)
    return f"{p}:Plus"


def cli_env(lake: sila.Lake, server=None) -> dict:
    return {**os.environ, **(server.env if server and lake.uri.startswith("s3://") else {})}


def run_cli(lake, stage, *extra, env, check=True):
    res = subprocess.run(
        sila_run_cmd(lake, stage, *extra),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
        return json.loads(res.stdout)
    return res


def values(lake):
    t = lake.table("nums").to_table(columns=["x", "p", "plus_error"])
    return sorted(
        zip(t["x"].to_pylist(), t["p"].to_pylist(), t["plus_error"].to_pylist(), strict=True)
    )


def expected(n):
    return [(float(i), float(i) + 100, None) for i in range(n)]


def test_discovery_run_and_idempotent_rerun(backend_lake, stage):
    make_numbers(backend_lake, 4, 40)
    assert backend_lake.tables() == ["nums"]
    job = backend_lake.run(stage)
    assert job["progress"]["fragments_done"] == 4 and values(backend_lake) == expected(160)
    assert backend_lake.run(stage)["progress"]["fragments_done"] == 0
    done, pending = split_fragments(backend_lake.table("nums"), "plus")
    assert (len(done), len(pending)) == (4, 0)
    q = backend_lake.sql("select count(*) as n from nums where p = x + 100")
    assert q.to_pylist() == [{"n": 160}]


def test_leases_under_contention(backend_lake):
    wins: list = []
    barrier = threading.Barrier(8)

    def race(i):
        ls = LeaseStore(
            sila.Lake(backend_lake.uri, storage_options=backend_lake.storage_options).store, ttl=30
        )
        barrier.wait()
        lease = ls.acquire("nums", "plus", "0-abc", owner=f"w{i}", job="j")
        if lease:
            wins.append(lease.gen)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == [1]


@pytest.mark.slow
def test_sigkill_then_resume_identically(backend_lake, stage, request):
    server = request.getfixturevalue("s3_server") if backend_lake.uri.startswith("s3://") else None
    env = cli_env(backend_lake, server)
    make_numbers(backend_lake, 4, 100)
    killed = run_cli(
        backend_lake,
        stage,
        "--workers",
        2,
        env={**env, "SILA_FAULT": "after_checkpoint:2"},
        check=False,
    )
    assert killed.returncode != 0
    job = run_cli(backend_lake, stage, env=env)
    assert job["progress"]["segments_reused"] >= 1
    assert values(backend_lake) == expected(400)


@pytest.mark.slow
def test_concurrent_jobs_and_an_append(backend_lake, stage, request):
    server = request.getfixturevalue("s3_server") if backend_lake.uri.startswith("s3://") else None
    env = cli_env(backend_lake, server)
    make_numbers(backend_lake, 6, 40)
    cmd = [str(BIN / "sila"), "run", stage, "--lake", backend_lake.uri, "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    time.sleep(1.0)
    lance.write_dataset(
        pa.table({"id": ["new"], "x": [240.0]}),
        backend_lake.table_uri("nums"),
        mode="append",
        storage_options=backend_lake.storage_options or None,
    )
    jobs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(j["state"] == "succeeded" for j in jobs)
    late = backend_lake.run(stage)["progress"]["fragments_done"]
    assert sum(j["progress"]["fragments_done"] for j in jobs) + late == 7
    assert values(backend_lake) == expected(241)


def test_unreachable_endpoint_is_a_clear_error_not_a_hang(tmp_path):
    from tests.s3 import free_port

    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "very-secret-value",
        "AWS_REGION": "us-east-1",
    }
    t0 = time.time()
    res = subprocess.run(
        [str(BIN / "sila"), "status", "--lake", "s3://nowhere/lake"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 1 and time.time() - t0 < 90
    assert "storage error" in res.stderr and "Traceback" not in res.stderr
    assert "very-secret-value" not in res.stderr + res.stdout


def test_wrong_credentials_are_a_clear_error(tmp_path):
    from tests import s3

    server = s3.start({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # moto with authentication on
    try:
        env = {**os.environ, **server.env, "AWS_SECRET_ACCESS_KEY": "wrong-secret-123"}
        res = subprocess.run(
            [str(BIN / "sila"), "status", "--lake", "s3://some-bucket/lake", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert res.returncode == 1
        out = json.loads(res.stdout)
        assert out["ok"] is False and "storage error" in out["error"]
        assert "wrong-secret-123" not in res.stdout + res.stderr
    finally:
        server.stop()


def test_secrets_never_reach_job_records(tmp_path, s3_server, stage):
    lake = sila.Lake(f"s3://{s3_server.bucket()}/lake", storage_options=s3_server.options).init()
    make_numbers(lake, 1, 10)
    args = [f"--storage-option={k}={v}" for k, v in s3_server.options.items()]
    res = subprocess.run(
        [str(BIN / "sila"), "run", stage, "--lake", lake.uri, "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    job = json.loads(res.stdout)
    rec = json.dumps([j for j in lake.status()["jobs"]] + [job])
    raw = [lake.store.get(e.key) for e in lake.store.list("jobs")]
    assert all(b"testing" not in r for r in raw) and "aws_secret_access_key=***" in json.dumps(
        job["argv"]
    )
    assert "testing" not in rec


def test_ingest_from_and_into_object_storage(s3_server, corpus):
    import obstore
    from sila.coordinator.store import open_store

    src = s3_server.bucket()
    store = open_store(f"s3://{src}", s3_server.options)
    for name in ("multishot_a.mp4", "tone.wav", "notes.txt"):
        obstore.put(store, f"raw/{name}", corpus[name].read_bytes())
    lake = sila.Lake(f"s3://{s3_server.bucket()}/lake", storage_options=s3_server.options)
    rep = lake.ingest([f"s3://{src}/raw/"])
    assert (rep.added, rep.failed) == (3, 1)
    assert lake.ingest([f"s3://{src}/raw/"]).present == 3
    job = lake.run("thumbnail")
    rows = {
        r["filename"]: r
        for r in lake.table("sources")
        .to_table(columns=["filename", "uri", "thumbnail", "thumbnail_error"])
        .to_pylist()
    }
    assert rows["multishot_a.mp4"]["uri"] == f"s3://{src}/raw/multishot_a.mp4"
    assert (
        rows["multishot_a.mp4"]["thumbnail"][:2] == b"\xff\xd8"
        and job["progress"]["row_errors"] == 0  # the audio file is outside thumbnail's where
    )
    assert rows["tone.wav"]["thumbnail"] is None and rows["tone.wav"]["thumbnail_error"] is None


def test_recipe_storage_section_reaches_every_part(tmp_path, s3_server, stage):
    bucket = s3_server.bucket()
    recipe = tmp_path / "s3lake.toml"
    recipe.write_text(
        "[storage]\n" + "".join(f'{k} = "{v}"\n' for k, v in s3_server.options.items())
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "SILA_RECIPE": str(recipe)
    }
    lake = sila.Lake(f"s3://{bucket}/lake", storage_options=s3_server.options).init()
    make_numbers(lake, 2, 10)
    res = subprocess.run(
        [str(BIN / "sila"), "run", stage, "--lake", lake.uri, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    res = subprocess.run(
        [
            str(BIN / "sila"),
            "sql",
            "select count(*) as n from nums where p is not null",
            "--lake",
            lake.uri,
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(res.stdout)["rows"] == [{"n": 20}]
