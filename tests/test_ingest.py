"""Ingest of real generated media: kinds, probe columns, dedup, manifests, bad inputs."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.compute as pc


def rows_by_name(lake):
    t = lake.table("sources").to_table(
        columns=[c for c in lake.table("sources").schema.names if c != "media"]
    )
    return {r["filename"]: r for r in t.to_pylist()}


def test_ingest_directory_probes_every_kind(lake, corpus):
    rep = lake.ingest([corpus["_dir"]])
    assert rep.added >= 10 and rep.present == 0
    rows = rows_by_name(lake)
    v = rows["multishot_a.mp4"]
    assert v["media_kind"] == "video" and v["video_codec"] == "h264" and v["has_audio"] is True
    assert v["width"] == 320 and v["height"] == 180 and v["fps"] > 20 and v["frame_count"] > 10
    assert v["sample_rate"] > 0 and v["channels"] >= 1 and v["ingest_error"] is None
    assert rows["image_bars.png"]["media_kind"] == "image"
    assert rows["tone.wav"]["media_kind"] == "audio" and rows["tone.wav"]["has_audio"]
    assert rows["rotated.mp4"]["rotation"] in (90, 270)
    assert (
        "corrupt" in rows["corrupt.mp4"]["ingest_error"]
        or "truncated" in rows["corrupt.mp4"]["ingest_error"]
    )
    assert "not a media file" in rows["notes.txt"]["ingest_error"]
    assert rep.failed == sum(1 for r in rows.values() if r["ingest_error"])


def test_blob_bytes_are_the_file(lake, corpus):
    lake.ingest([corpus["multishot_a.mp4"]])
    ds = lake.table("sources")
    blob = ds.take_blobs("media", indices=[0])[0]
    assert blob.read() == corpus["multishot_a.mp4"].read_bytes()


def test_reingest_and_identical_bytes_add_nothing(lake, corpus, tmp_path):
    copy = tmp_path / "copy_of_a.mp4"
    shutil.copy(corpus["multishot_a.mp4"], copy)
    rep = lake.ingest([corpus["multishot_a.mp4"], copy])
    assert (rep.added, rep.present) == (1, 1)
    rep = lake.ingest([corpus["multishot_a.mp4"]])
    assert (rep.added, rep.present) == (0, 1)
    assert lake.table("sources").count_rows() == 1


def test_bad_inputs_become_rows_not_crashes(lake, tmp_path, corpus):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mov"
    junk.write_bytes(os.urandom(5000))
    half = tmp_path / "half.mp4"
    data = corpus["multishot_b.mp4"].read_bytes()
    half.write_bytes(data[: len(data) // 3])
    rep = lake.ingest([empty, junk, half, tmp_path / "does-not-exist.mp4"])
    assert (
        rep.added == 3 and rep.failed == 3 and rep.missing == [str(tmp_path / "does-not-exist.mp4")]
    )
    errors = {os.path.basename(f["path"]): f["error"] for f in rep.failures}
    assert "zero-byte" in errors["empty.mp4"]
    assert errors["junk.mov"] and errors["half.mp4"]


def test_unreadable_file_is_a_row_error(lake, tmp_path):
    if os.geteuid() == 0:
        import pytest

        pytest.skip("root reads any file")
    p = tmp_path / "secret.mp4"
    p.write_bytes(b"x" * 10)
    p.chmod(0)
    rep = lake.ingest([p])
    assert rep.failed == 1 and "unreadable" in rep.failures[0]["error"]


def test_globs_and_manifests(lake, corpus, tmp_path):
    d = corpus["_dir"]
    rep = lake.ingest([str(d / "*.png")])
    assert rep.added == 1
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": str(d / "tone.wav")}) + "\n")
    (tmp_path / "m.csv").write_text(f"path\n{d / 'static.mp4'}\n{d / 'tone.wav'}\n")
    # absolute paths out of the manifests' folder: accepted only when asked for
    rep = lake.ingest([tmp_path / "m.jsonl", tmp_path / "m.csv"], allow_outside=True)
    assert (rep.added, rep.present) == (2, 0)  # tone.wav named twice: one row
    assert lake.table("sources").count_rows() == 3


def test_reference_mode_keeps_a_path(lake, corpus):
    lake.ingest([corpus["static.mp4"]], reference=True)
    t = lake.table("sources").to_table(columns=["stored", "uri"])
    assert t["stored"][0].as_py() == "reference" and t["uri"][0].as_py() == str(
        corpus["static.mp4"]
    )
    job = lake.run("thumbnail")  # the stage reads the referenced file
    assert job["progress"]["row_errors"] == 0
    thumbs = lake.table("sources").to_table(columns=["thumbnail"])
    assert thumbs["thumbnail"][0].as_py()[:2] == b"\xff\xd8"
    assert pc.sum(pc.is_null(thumbs["thumbnail"])).as_py() == 0


def test_pipes_and_broken_links_do_not_hang_ingest(lake, tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    os.mkfifo(d / "pipe.mp4")  # opening it for reading would block forever
    (d / "broken.mp4").symlink_to(d / "nowhere")
    rep = lake.ingest([d])
    errors = {os.path.basename(f["path"]): f["error"] for f in rep.failures}
    assert "not a regular file" in errors["pipe.mp4"] and "unreadable" in errors["broken.mp4"]
