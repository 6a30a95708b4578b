"""Manifests: bad lines are reported failures (file and line), the rest goes in; relative paths
stay inside the manifest's folder; other fields become typed, stable `meta_*` columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from ingest_gen import png_bytes

SILA = str(Path(sys.executable).parent / "sila")


@pytest.fixture
def media(tmp_path) -> Path:
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    for i in range(6):
        (d / f"f{i}.png").write_bytes(png_bytes(100 + i))
    (d / "sub" / "deep.png").write_bytes(png_bytes(200))
    (tmp_path / "outside.png").write_bytes(png_bytes(300))
    return d


def jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def meta(lake) -> dict[str, dict]:
    t = lake.table("sources")
    cols = ["filename", *[n for n in t.schema.names if n.startswith("meta_")]]
    return {r.pop("filename"): r for r in t.to_table(columns=cols).to_pylist()}


def test_bad_lines_are_reported_and_the_rest_goes_in(lake, media):
    m = jsonl(
        media / "m.jsonl",
        [
            {"path": "f0.png", "caption": "a red ball"},
            "{not json",
            {"path": 12},
            {"path": ""},
            {"caption": "no path here"},
            '["a", "list"]',
            {"path": "f1.png"},
            {"path": "gone.png"},
        ],
    )
    (media / "m.csv").write_text("path,caption\nf2.png,x\n,empty path\nf3.png,y,extra\nf4.png,z\n")
    rep = lake.ingest([m, media / "m.csv"])
    bad = {f["path"]: f["error"] for f in rep.failures if f["id"] is None}
    assert bad == {
        f"{m}:2": "not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{m}:3": "'path' must be a string, got int 12",
        f"{m}:4": "'path' is empty",
        f"{m}:5": "no 'path' field (nor 'uri', 'file')",
        f"{m}:6": "expected a JSON object, got list",
        f"{media / 'm.csv'}:3": "'path' is empty",
        f"{media / 'm.csv'}:4": "3 fields, header has 2",
    }
    assert not [f for f in rep.failures if f["id"]]  # a named file that does not exist: missing
    assert rep.missing == [f"{media / 'gone.png'} (named in {m}:8)"]
    assert rep.added == 4 and rep.failed == 7  # f0 f1 f2 f4
    assert meta(lake)["f0.png"]["meta_caption"] == "a red ball"


def test_relative_paths_may_not_leave_the_manifest_folder(lake, media, tmp_path):
    m = jsonl(
        media / "m.jsonl",
        [
            {"path": "../outside.png"},
            {"path": "../../../../../../etc/passwd"},
            {"path": "sub/../f0.png"},  # stays inside: fine
            {"path": "sub/deep.png"},
        ],
    )
    (media / "escape.png").symlink_to(tmp_path / "outside.png")
    jsonl(media / "m2.jsonl", [{"path": "escape.png"}])
    rep = lake.ingest([m, media / "m2.jsonl"])
    assert rep.skipped_outside == 3 and rep.added == 2 and rep.present == 0
    details = " ".join(s["detail"] for s in rep.skipped)
    assert f"{m}:1" in details and f"{m}:2" in details and "--allow-outside" in details
    assert "passwd" not in json.dumps(meta(lake))
    rep = lake.ingest([m, media / "m2.jsonl"], allow_outside=True)
    assert rep.skipped_outside == 0 and rep.added == 2  # outside.png + /etc/passwd (not media)


def test_absolute_paths_are_confined_and_never_read(lake, media, tmp_path):
    """An absolute path, with or without `..`, is refused unless it resolves into the manifest's
    folder or a folder named on the command line; a refused file is not even opened."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.png").write_bytes(png_bytes(500))
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(501))
    m = jsonl(
        media / "m.jsonl",
        [
            {"path": str(secret)},
            {"path": f"{media}/../../../../etc/passwd"},
            {"path": "/x/../../etc/passwd"},
            {"path": f"{media}/sub/../../secret.png"},
            {"path": str(media / "f0.png")},  # absolute, inside the manifest's folder: fine
            {"path": str(other / "o.png")},  # inside a folder named on the command line: fine
        ],
    )
    (media / "link.png").symlink_to(secret)  # inside by name, outside once resolved
    jsonl(media / "m2.jsonl", [{"path": str(media / "link.png")}])
    opened: list[str] = []
    refused = {str(secret), "/etc/passwd"}

    def spy(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], (str, bytes)):
            real = os.path.realpath(os.fsdecode(args[0]))
            if real in refused:
                opened.append(real)

    sys.addaudithook(spy)  # sees every open() in this process, hashing included
    rep = lake.ingest([m, media / "m2.jsonl", other])
    assert opened == []
    assert rep.skipped_outside == 5 and rep.added == 2 and rep.failed == 0, rep.to_dict()
    details = [s["detail"] for s in rep.skipped if s["reason"] == "outside"]
    assert sorted(d.split(",")[0] for d in details) == sorted(
        [f"named in {m}:{i}" for i in (1, 2, 3, 4)] + [f"named in {media / 'm2.jsonl'}:1"]
    )
    paths = lake.table("source_paths").to_table(columns=["path"])["path"].to_pylist()
    assert not [p for p in paths if "secret" in p or "passwd" in p or "link" in p]
    assert sorted(meta(lake)) == ["f0.png", "o.png"]


def test_meta_columns_are_typed_and_stable(lake, media):
    m1 = jsonl(
        media / "a.jsonl",
        [
            {"path": "f0.png", "label": "cat", "score": 3, "ok": True, "tags": ["a", "b"]},
            {"path": "f1.png", "label": "dog", "score": 2.5, "license": "cc-by"},
        ],
    )
    lake.ingest([m1])
    schema = lake.table("sources").schema
    types = {n: schema.field(n).type for n in schema.names if n.startswith("meta_")}
    assert types == {
        "meta_label": pa.string(),
        "meta_score": pa.float64(),  # an int and a float: float
        "meta_ok": pa.bool_(),
        "meta_tags": pa.string(),  # nested values as JSON text
        "meta_license": pa.string(),
    }
    assert meta(lake)["f0.png"]["meta_tags"] == '["a", "b"]'
    # a later ingest: same column, wrong type -> a reported error, the file still goes in
    m2 = jsonl(media / "b.jsonl", [{"path": "f2.png", "score": "high", "Source Name": "web"}])
    rep = lake.ingest([m2])
    assert rep.added == 1 and lake.table("sources").schema.field("meta_score").type == pa.float64()
    assert len(rep.warnings) == 1 and "meta_score: expected double" in rep.warnings[0]["error"]
    assert rep.warnings[0]["origin"] == f"{m2}:1"
    rows = meta(lake)
    assert rows["f2.png"]["meta_score"] is None and rows["f2.png"]["meta_source_name"] == "web"
    assert rows["f0.png"]["meta_source_name"] is None  # old rows: null, not rewritten
    got = lake.sql("select filename from sources where meta_score > 2.6").to_pylist()
    assert got == [{"filename": "f0.png"}]


def test_csv_types_are_inferred_per_column(lake, media):
    (media / "m.csv").write_text(
        "file,frames,fps,night,code\nf0.png,10,29.97,true,007\nf1.png,20,30,false,12\n"
    )
    lake.ingest([media / "m.csv"])
    s = lake.table("sources").schema
    assert [s.field(c).type for c in ("meta_frames", "meta_fps", "meta_night", "meta_code")] == [
        pa.int64(), pa.float64(), pa.bool_(), pa.string(),
    ]  # fmt: skip
    assert meta(lake)["f0.png"]["meta_code"] == "007"


def test_duplicate_content_keeps_the_first_values(lake, media):
    (media / "twin.png").write_bytes((media / "f0.png").read_bytes())
    m = jsonl(
        media / "m.jsonl",
        [{"path": "f0.png", "label": "first"}, {"path": "twin.png", "label": "second"}],
    )
    rep = lake.ingest([m])
    assert (rep.added, rep.present) == (1, 1)
    assert meta(lake)["f0.png"]["meta_label"] == "first"
    assert "keeps its first values" in rep.warnings[0]["error"] and "second" in str(rep.warnings)
    m2 = jsonl(media / "m2.jsonl", [{"path": "f0.png", "label": "again"}])
    rep = lake.ingest([m2])  # a later ingest, same file, other value: reported, not rewritten
    assert rep.present == 1 and "again" in rep.warnings[0]["error"]
    paths = lake.table("source_paths").to_table(columns=["path"])["path"].to_pylist()
    assert sorted(os.path.basename(p) for p in paths) == ["f0.png", "twin.png"]


def test_cli_json_stays_valid_with_a_broken_manifest(tmp_path, media):
    m = jsonl(media / "m.jsonl", [{"path": "f0.png"}, "oops", {"path": None}])
    res = subprocess.run(
        [SILA, "ingest", str(m), str(media / "sub"), "--json", "--lake", str(tmp_path / "lk")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = json.loads(res.stdout)
    assert res.returncode == 0 and out["added"] == 2 and out["failed"] == 2
    assert {f["path"] for f in out["failures"]} == {f"{m}:2", f"{m}:3"}
    res = subprocess.run(
        [SILA, "ingest", str(m), "--lake", str(tmp_path / "lk")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert f"{m}:3: 'path' must be a string, got null" in res.stdout
    res = subprocess.run(
        [SILA, "ingest", str(m), "--json", "--bytes-per-fragment", "lots", "--lake",
         str(tmp_path / "lk")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 1 and "2GiB" in json.loads(res.stdout)["error"]


def test_undecodable_names_and_byte_order_marks(lake, media):
    raw = os.path.join(os.fsencode(media), b"caf\xe9.png")
    with open(raw, "wb") as fh:
        fh.write(png_bytes(400))
    (media / "m.jsonl").write_bytes(b'\xef\xbb\xbf{"path": "caf\xe9.png", "label": "x"}\n')
    (media / "m.csv").write_bytes(b"\xef\xbb\xbfpath,label\nf0.png,y\n")
    rep = lake.ingest([media / "m.jsonl", media / "m.csv"])
    assert (rep.added, rep.failed) == (2, 0), rep.failures
    rows = {r["filename"]: r for r in lake.table("sources").to_table(
        columns=["filename", "uri_bytes", "meta_label"]).to_pylist()}  # fmt: skip
    assert rows["caf\\xe9.png"]["uri_bytes"] == raw and rows["caf\\xe9.png"]["meta_label"] == "x"
    assert rows["f0.png"]["meta_label"] == "y"


def test_manifest_fields_fill_files_already_present(lake, media):
    """Files ingested plainly first, then named by a manifest: its fields fill their empty
    `meta_*` cells in place; a cell that already holds a value keeps it (and a warning says so)."""
    lake.ingest([media], rows_per_fragment=3)
    assert lake.run("thumbnail")["state"] == "succeeded"

    def layout() -> list[list[str]]:
        frags = lake.table("sources").get_fragments()
        return [f.to_table(columns=["id"])["id"].to_pylist() for f in frags]

    before = layout()
    m = jsonl(
        media / "m.jsonl",
        [{"path": f"f{i}.png", "caption": f"image {i}"} for i in range(5)]
        + [{"path": "sub/deep.png", "score": 7}],
    )
    rep = lake.ingest([m])
    assert (rep.added, rep.present, rep.meta_filled) == (0, 6, 6) and rep.warnings == []
    rows = meta(lake)
    assert rows["f3.png"]["meta_caption"] == "image 3" and rows["f5.png"]["meta_caption"] is None
    assert rows["deep.png"] == {"meta_caption": None, "meta_score": 7}
    assert layout() == before  # filled in place: same rows in the same fragments
    thumbs = lake.table("sources").to_table(columns=["thumbnail"])["thumbnail"]
    assert thumbs.null_count == 0 and lake.run("thumbnail")["progress"]["rows"] == 0
    m2 = jsonl(
        media / "m2.jsonl",
        [{"path": "f0.png", "caption": "other", "score": 1}, {"path": "f5.png", "caption": "5"}],
    )
    rep = lake.ingest([m2])
    assert rep.meta_filled == 2  # f0's empty score, f5's empty caption
    rows = meta(lake)
    assert rows["f0.png"] == {"meta_caption": "image 0", "meta_score": 1}
    assert rows["f5.png"]["meta_caption"] == "5"
    assert len(rep.warnings) == 1 and "not stored: {'meta_caption': 'other'}" in str(rep.warnings)
    first = lake.table("sources").to_table(columns=["id"])["id"][0].as_py()
    assert lake.sql(f"select count(*) n from sources where id = '{first}'").to_pylist() == [
        {"n": 1}
    ]


def test_cli_exits_non_zero_when_nothing_is_ingested(tmp_path, media):
    """A manifest with no path column, or whose every line is refused: `ok: false`, exit 1;
    a re-ingest that finds everything already present is still a success."""
    lk = str(tmp_path / "lk")
    (media / "nopath.csv").write_text("name,caption\nf0.png,a\n")
    jsonl(media / "out.jsonl", [{"path": "../outside.png"}])

    def sila(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([SILA, "ingest", *args, "--lake", lk], capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip

    for manifest, why in (("nopath.csv", "1 failed"), ("out.jsonl", "1 outside")):
        res = sila(str(media / manifest), "--json")
        out = json.loads(res.stdout)
        assert res.returncode == 1 and out["ok"] is False and out["added"] == 0
        assert out["error"].startswith("nothing was ingested: " + why), out["error"]
    res = sila(str(media / "nopath.csv"))
    assert res.returncode == 1 and "nothing was ingested" in res.stderr
    assert "no 'path' column (columns: name, caption)" in res.stdout
    assert sila(str(media / "sub"), "--json").returncode == 0
    again = sila(str(media / "sub"), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["already_present"] == 1
