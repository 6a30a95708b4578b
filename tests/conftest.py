"""Shared fixtures: small generated media, fresh lakes, numeric tables with many fragments."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")  # before lance loads: it reads this once

import lance  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

import sila  # noqa: E402

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """The demo corpus (small), generated once per test session with real ffmpeg."""
    from sila.demo.corpus import make_corpus

    out = tmp_path_factory.mktemp("corpus")
    files = make_corpus(out, small=True)
    return {p.name: p for p in files} | {"_dir": out}


def sila_run_cmd(lake, stage_spec: str, *extra) -> list[str]:
    """`sila run` as the kill and backend tests start it: short leases, every segment durable."""
    return [
        str(BIN / "sila"),
        "run",
        stage_spec,
        "--lake",
        lake.uri,
        "--json",
        "--lease-ttl",
        "1.5",
        "--checkpoint-min-s",
        "0",
        *map(str, extra),
    ]


@pytest.fixture
def lake(tmp_path) -> sila.Lake:
    return sila.Lake(tmp_path / "lake").init()


def make_numbers(
    lake: sila.Lake, fragments: int, rows_per_fragment: int, name: str = "nums"
) -> lance.LanceDataset:
    n = fragments * rows_per_fragment
    tbl = pa.table({"id": [f"r{i}" for i in range(n)], "x": np.arange(n, dtype=np.float64)})
    return lance.write_dataset(
        tbl,
        lake.table_uri(name),
        max_rows_per_file=rows_per_fragment,
        storage_options=lake.storage_options or None,
    )


@pytest.fixture
def nums(lake) -> sila.Lake:
    make_numbers(lake, fragments=6, rows_per_fragment=100)
    return lake


@pytest.fixture
def stage_file(tmp_path):
    """Write a user stage module to a file and return its path."""

    def write(code: str, name: str = "my_stages.py") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(code))
        return p

    return write


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 server (moto) for the object-store backend."""
    from tests import s3

    server = s3.start()
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def backend_lake(request, tmp_path) -> sila.Lake:
    """The same test on a local directory lake and on an S3 lake."""
    if request.param == "local":
        return sila.Lake(tmp_path / "lake").init()
    server = request.getfixturevalue("s3_server")
    return sila.Lake(f"s3://{server.bucket()}/lake", storage_options=server.options).init()


@pytest.fixture(scope="session")
def clip_media(tmp_path_factory):
    """Generated clips with known duplicate groups (tests/clip_lake.py), made once."""
    from tests.clip_lake import make_clips

    return make_clips(tmp_path_factory.mktemp("clip_media"))
