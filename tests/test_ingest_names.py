"""A real-looking folder: ~2,000 files, one name that is not UTF-8, hidden files and folders,
symlinks in, out and in a loop, copies under other names. Every file must be accounted for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ingest_gen import png_bytes

import sila

N = 2000
BAD = b"caf\xe9-latin1.png"  # Latin-1 bytes: not valid UTF-8


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    d = root / "corpus"
    for i in range(N):
        sub = d / f"batch{i // 500}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img{i:04d}.png").write_bytes(png_bytes(i))
    (d / "notes.txt").write_text("not media\n")
    with open(os.path.join(os.fsencode(d), BAD), "wb") as fh:
        fh.write(png_bytes(10_000))
    (d / ".DS_Store").write_bytes(b"\x00\x01")
    (d / ".git").mkdir()
    for i in range(3):
        (d / ".git" / f"obj{i}").write_bytes(png_bytes(20_000 + i))
    outside = root / "private"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(30_000))
    (d / "leak.png").symlink_to(outside / "secret.png")
    (d / "leakdir").symlink_to(outside)
    (d / "alias").symlink_to(d / "batch0")  # a folder link inside: its files have two names
    (d / "batch1" / "loop").symlink_to(d)  # back to the root: must not recurse forever
    (d / "copy-of-img0001.png").write_bytes(png_bytes(1))  # same bytes, other name
    return d


@pytest.fixture(scope="module")
def ingested(tree, tmp_path_factory):
    lake = sila.Lake(tmp_path_factory.mktemp("lk") / "lake").init()
    return lake, lake.ingest([tree])


def test_every_file_is_accounted_for(ingested):
    lake, rep = ingested
    # N pngs + notes.txt + the Latin-1 name; the copy and 500 names via `alias` are present
    assert rep.added == N + 2
    assert rep.present == 1 + 500
    assert rep.failed == 1 and "not a media file" in rep.failures[0]["error"]
    assert rep.skipped_hidden == 1 + 3  # .DS_Store + the 3 files inside .git
    assert rep.skipped_outside == 2  # leak.png, leakdir
    reasons = {os.path.basename(s["path"]): s for s in rep.skipped}
    assert "private" in reasons["leak.png"]["detail"] and reasons["leakdir"]["reason"] == "outside"
    assert "3 files" in reasons[".git"]["detail"]
    assert lake.table("sources").count_rows() == N + 2
    secret = lake.sql("select count(*) as n from sources where filename = 'secret.png'")
    assert secret["n"][0].as_py() == 0  # nothing from outside the folder was read


def test_fragments_spread_the_corpus(ingested):
    lake, rep = ingested
    frags = lake.table("sources").get_fragments()
    assert rep.fragments == len(frags) == -(-(N + 2) // 64)
    assert max(f.count_rows() for f in frags) == 64


def test_undecodable_name_is_a_row_with_its_bytes(ingested, tree):
    lake, _ = ingested
    t = lake.sql(
        "select uri, filename, uri_bytes, media_kind from sources where uri_bytes is not null"
    )
    assert t.num_rows == 1
    row = t.to_pylist()[0]
    assert row["filename"] == "caf\\xe9-latin1.png" and row["media_kind"] == "image"
    assert row["uri_bytes"] == os.path.join(os.fsencode(tree), BAD)
    assert os.path.exists(row["uri_bytes"])  # the raw bytes open the real file


def test_every_name_of_a_file_finds_it(ingested, tree):
    lake, _ = ingested
    t = lake.table("source_paths").to_table().to_pylist()
    by_path = {r["path"]: r["source_id"] for r in t}
    assert by_path[str(tree / "copy-of-img0001.png")] == by_path[str(tree / "batch0/img0001.png")]
    assert by_path[str(tree / "alias/img0002.png")] == by_path[str(tree / "batch0/img0002.png")]
    assert len(t) == N + 2 + 1 + 500  # one row per name, each name once
    ids = set(lake.table("sources").to_table(columns=["id"])["id"].to_pylist())
    assert set(by_path.values()) == ids  # every source is findable, and only sources are listed


def test_reingest_adds_nothing_and_rewrites_nothing(ingested, tree):
    lake, _ = ingested
    before = (lake.table("sources").version, lake.table("source_paths").count_rows())
    rep = lake.ingest([tree])
    assert (rep.added, rep.present, rep.fragments, rep.paths_recorded) == (0, N + 2 + 501, 0, 0)
    assert lake.table("sources").version == before[0]
    assert lake.table("source_paths").count_rows() == before[1]


def test_allow_outside_follows_the_links(tree, tmp_path):
    lake = sila.Lake(tmp_path / "lake").init()
    rep = lake.ingest([tree / "leakdir", tree / "leak.png"])  # named on the command line: explicit
    assert rep.added == 1 and rep.present == 1
    rep = lake.ingest([tree], allow_outside=True, rows_per_fragment=1000)
    assert rep.skipped_outside == 0 and rep.fragments == 3


def test_cli_json_is_valid_for_the_whole_tree(tree, tmp_path):
    out = subprocess.run(
        [str(Path(sys.executable).parent / "sila"), "ingest", str(tree), "--json",
         "--lake", str(tmp_path / "lake"), "--rows-per-fragment", "500"],
        capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout)  # strict JSON, although one file name is not UTF-8
    assert rep["added"] == N + 2 and rep["fragments"] == 5
    assert (rep["skipped_hidden"], rep["skipped_outside"]) == (4, 2)
    assert any(s["path"].endswith("leakdir") for s in rep["skipped"])
