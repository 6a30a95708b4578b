"""Training data out: WebDataset shards read back by `webdataset` and Megatron-Energon, resumable
and byte-identical exports, leakage-free splits and their audit, mixtures, dev tables, Parquet
snapshots and the dataset card. Clips here carry real mp4s made by ffmpeg."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import av
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

import sila
from tests.conftest import BIN

BLOB = {"lance-encoding:blob": "true", "sila.stage": "transcode", "sila.stage_version": "1"}


@pytest.fixture(scope="session")
def mp4s(tmp_path_factory) -> list[tuple[bytes, int, int, float]]:
    import imageio_ffmpeg

    d = tmp_path_factory.mktemp("mp4")
    out = []
    for i, (w, h, dur) in enumerate([(320, 180, 1), (320, 180, 3), (180, 320, 1), (640, 360, 6)]):
        p = d / f"v{i}.mp4"
        subprocess.run(
            [
                imageio_ffmpeg.get_ffmpeg_exe(),
                "-y",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"testsrc=size={w}x{h}:rate=10:duration={dur}",
                "-pix_fmt",
                "yuv420p",
                str(p),
            ],
            check=True,
        )
        out.append((p.read_bytes(), w, h, float(dur)))
    return out


def make_clips(lake: sila.Lake, mp4s, n: int = 24, ids=None, mode: str = "create") -> None:
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("source_id", pa.string()),
            pa.field("video", pa.large_binary(), metadata=BLOB),
            ("video_width", pa.int32()),
            ("video_height", pa.int32()),
            ("video_duration_s", pa.float64()),
            ("video_fps", pa.float64()),
            ("video_bytes", pa.int64()),
            pa.field("quality_keep", pa.bool_(), metadata={"sila.stage": "quality"}),
            pa.field("quality_reasons", pa.list_(pa.string()), metadata={"sila.stage": "quality"}),
            ("label", pa.string()),
            ("embedding", pa.list_(pa.float32(), 4)),
        ]
    )
    rows = []
    for i in range(n):
        data, w, h, d = mp4s[i % len(mp4s)]
        rows.append(
            {
                "id": ids[i] if ids else f"src{i % 8}/{i * 10}-{i * 10 + 10}",
                "source_id": f"src{i % 8}",
                "video": data,
                "video_width": w,
                "video_height": h,
                "video_duration_s": d,
                "video_fps": 10.0,
                "video_bytes": len(data),
                "quality_keep": i % 6 != 5,
                "quality_reasons": ["static"] if i % 6 == 5 else [],
                "label": f"class{i % 3}",
                "embedding": [float(i)] * 4,
            }
        )
    tbl = pa.Table.from_pylist(rows, schema=schema)
    import lance

    lance.write_dataset(tbl, lake.table_uri("clips"), schema=schema, max_rows_per_file=8, mode=mode)


@pytest.fixture
def clips_lake(tmp_path, mp4s) -> sila.Lake:
    lk = sila.Lake(tmp_path / "lake").init()
    make_clips(lk, mp4s)
    return lk


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_shards_read_back_and_match_the_manifest(clips_lake, tmp_path):
    out = tmp_path / "out"
    man = clips_lake.export(str(out), target_bytes=40_000)
    kept = 24 - 4  # rows with quality_keep = false are left out by default
    assert man["samples"] == kept and "quality_keep" in man["selection"]
    seen_keys: set[str] = set()
    for bucket, info in man["buckets"].items():
        urls = [str(out / s) for s in info["shards"]]
        samples = list(wds.WebDataset(urls, shardshuffle=False))
        assert len(samples) == info["samples"], bucket
        for s in samples:
            assert s["__key__"] not in seen_keys and "." not in s["__key__"]
            seen_keys.add(s["__key__"])
            meta = json.loads(s["json"])
            assert meta["quality_keep"] is True and meta["id"].startswith("src")
            with av.open(__import__("io").BytesIO(s["mp4"])) as c:
                assert sum(1 for _ in c.decode(video=0)) >= 10
            assert len(s["embedding.npy"]) > 0
    assert len(seen_keys) == kept
    for shard in out.rglob("*.tar"):
        with tarfile.open(shard) as t:
            for m in t.getmembers():
                assert "/" not in m.name and ".." not in m.name and m.mtime == 0
    # energon reads it through our .nv-meta (no `energon prepare`)
    pytest.importorskip("megatron.energon")
    from megatron.energon import (
        Cooker,
        DefaultTaskEncoder,
        TextSample,
        WorkerConfig,
        basic_sample_keys,
        get_loader,
        get_train_dataset,
        stateless,
    )

    @stateless
    def cook(s):
        return TextSample(**basic_sample_keys(s), text=s["json"]["id"])

    class Encoder(DefaultTaskEncoder):
        cookers = [Cooker(cook)]

    ds = get_train_dataset(
        str(out),
        batch_size=None,
        shuffle_buffer_size=None,
        max_samples_per_sequence=None,
        worker_config=WorkerConfig(rank=0, world_size=1, num_workers=0),
        repeat=False,
        task_encoder=Encoder(),
    )
    ids = sorted(s.text for s in get_loader(ds))
    assert len(ids) == kept and len(set(ids)) == kept


def test_rerun_is_byte_identical_and_a_killed_export_resumes_to_the_same_bytes(
    clips_lake, tmp_path
):
    ref = tmp_path / "ref"
    clips_lake.export(str(ref), target_bytes=20_000)
    again = tmp_path / "again"
    clips_lake.export(str(again), target_bytes=20_000)
    assert tree_digest(ref) == tree_digest(again)
    killed = tmp_path / "killed"
    code = (
        "import sys, time, sila, sila.export.wds as e\n"
        "orig = e._write_shard\n"
        "def slow(*a, **k):\n    r = orig(*a, **k); time.sleep(0.4); return r\n"
        "e._write_shard = slow\n"
        f"sila.Lake({clips_lake.uri!r}).export({str(killed)!r}, target_bytes=20_000)\n"
    )
    p = subprocess.Popen([str(BIN / "python"), "-c", code], start_new_session=True)
    done_dir = killed / ".sila-export" / "done"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(done_dir.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    partial = len(list(done_dir.glob("*.json")))
    assert 2 <= partial < len(json.loads((ref / "manifest.json").read_text())["shards"])
    res = json.loads(
        subprocess.run(
            [
                str(BIN / "sila"),
                "export",
                "wds",
                str(killed),
                "--lake",
                clips_lake.uri,
                "--target-size",
                "20000",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert res["run"]["shards_reused"] == partial
    assert tree_digest(killed) == tree_digest(ref)
    # other settings into the same folder are refused, not mixed
    bad = subprocess.run(
        [
            str(BIN / "sila"),
            "export",
            "wds",
            str(killed),
            "--lake",
            clips_lake.uri,
            "--target-size",
            "1GB",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "another export" in bad.stderr + bad.stdout


def test_keys_are_sanitised_unique_and_short(tmp_path, mp4s):
    lk = sila.Lake(tmp_path / "lake").init()
    ids = ["a.b/0-1", "a_b/0-1", "x" * 300 + "/1", "x" * 300 + "/2", "../../etc/passwd", "ünï/çødé"]
    ids += [f"plain{i}" for i in range(6)]
    make_clips(lk, mp4s, n=len(ids), ids=ids)
    out = tmp_path / "out"
    lk.export(str(out), default_selection=False)
    keys = [
        s["__key__"]
        for s in wds.WebDataset(sorted(map(str, out.rglob("*.tar"))), shardshuffle=False)
    ]
    assert len(keys) == len(set(keys)) == len(ids)
    assert all(len(k) <= 100 and "." not in k and "/" not in k for k in keys)
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))


def test_splits_never_leak_a_group_and_the_audit_says_so(clips_lake, tmp_path):
    job = clips_lake.run(
        "assign_split",
        settings={"by": "source_id", "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}},
    )
    assert job["state"] == "succeeded"
    t = clips_lake.table("clips").to_table(columns=["source_id", "split"]).to_pylist()
    per_group: dict[str, set] = {}
    for r in t:
        per_group.setdefault(r["source_id"], set()).add(r["split"])
    assert all(len(v) == 1 for v in per_group.values()) and len({r["split"] for r in t}) >= 2
    man = clips_lake.export(str(tmp_path / "out"), label="label")
    audit = json.loads((tmp_path / "out" / "leakage_audit.json").read_text())
    assert audit["groups_in_two_splits"] == 0 and audit == man["audit"]
    assert set(audit["label"]["classes_per_split"]) == set(audit["splits"])
    split_yaml = (tmp_path / "out" / ".nv-meta" / "split.yaml").read_text()
    for split in audit["splits"]:
        assert f"{split}/" in split_yaml
    # chronological: groups ordered by time, earliest to train
    from sila.stages.assign_split import chronological_cutoffs

    cut = chronological_cutoffs({f"g{i}": float(i) for i in range(10)}, {"train": 0.8, "test": 0.2})
    assert [cut[f"g{i}"] for i in range(10)] == ["train"] * 8 + ["test"] * 2


def test_mixture_devtable_snapshot_and_card(clips_lake, tmp_path):
    recipe = tmp_path / "mix.toml"
    recipe.write_text(
        '[mixture]\nname = "m"\n'
        '[[mixture.subsets]]\nname = "long"\nwhere = "video_duration_s >= 3"\nweight = 0.6\n'
        'type = "video"\ntargets = ["video"]\n'
        '[[mixture.subsets]]\nname = "all"\nwhere = "true"\nweight = 0.4\ntargets = ["video", "caption"]\n'
    )
    mix = clips_lake.export(str(tmp_path / "mix"), mixture=str(recipe))
    by = {s["subset"]: s for s in mix["subsets"]}
    assert by["long"]["samples"] + by["all"]["samples"] == 20  # first named wins, no sample twice
    assert by["all"]["claimed_by_earlier_subsets"] == by["long"]["samples"]
    assert (tmp_path / "mix" / "long" / ".nv-meta" / ".info.json").is_file()
    assert "weight: 0.6" in (tmp_path / "mix" / "metadataset.yaml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(recipe.read_text().replace("0.4", "0.5"))
    with pytest.raises(sila.SilaError, match="sum to 1"):
        clips_lake.export(str(tmp_path / "bad"), mixture=str(bad))
    dev = clips_lake.devtable(str(tmp_path / "dev"), 12, stratify_by="label")
    assert dev["clips"] == 12
    for share in dev["strata"].values():
        assert abs(share["sample_share"] - share["source_share"]) <= 0.05
    small = sila.Lake(str(tmp_path / "dev"))
    assert small.table("clips").schema == clips_lake.table("clips").schema
    assert small.run("assign_split")["state"] == "succeeded"  # pipelines run unchanged on it
    snap = clips_lake.snapshot(str(tmp_path / "snap"), columns=["id", "video_width", "label"])
    assert pq.read_table(snap["clips"]["path"]).num_rows == 24
    n = duckdb.sql(
        f"select count(*) from '{snap['clips']['path']}' where label = 'class0'"
    ).fetchall()[0][0]
    assert n == 8
    card = clips_lake.card(str(tmp_path / "card"), mixture=mix)
    text = (tmp_path / "card" / "README.md").read_text()
    assert "## Filters" in text and "static" in text and "## Mixture" in text
    assert (tmp_path / "card" / "resolution.png").read_bytes()[:4] == b"\x89PNG"
    assert card["croissant_valid"] in (True, None)


def test_export_to_s3(clips_lake, s3_server):
    import obstore
    from sila.coordinator.store import open_store

    url = f"s3://{s3_server.bucket()}/shards"
    man = clips_lake.export(url, storage_options=s3_server.options)
    store = open_store(url, s3_server.options)
    names = {o["path"] for batch in obstore.list(store) for o in batch}
    assert {s["name"] for s in man["shards"]} <= names and "manifest.json" in names


SHORT = """
from sila.filters import Filter

class Short(Filter):
    name = "short"; table = "clips"; inputs = ["video_duration_s"]
    settings = {"max_s": 5.0}
    def filter(self, row):
        return (row["video_duration_s"] <= self.config["max_s"], "too long")
"""


def ds_count(lake: sila.Lake, where: str) -> int:
    return lake.table("clips").count_rows(filter=where)


def test_export_refuses_new_clips_nobody_curated_yet(clips_lake, mp4s, tmp_path):
    code = tmp_path / "short_stage.py"
    code.write_text(SHORT)
    assert clips_lake.run(f"{code}:Short")["state"] == "succeeded"
    curated = clips_lake.export(str(tmp_path / "curated"))
    kept = ds_count(clips_lake, "quality_keep AND video_duration_s <= 5")
    assert curated["samples"] == kept and "short_keep = true" in curated["selection"]
    # new clips arrive: their fragment is pending for 'short', so nothing decided them yet
    make_clips(clips_lake, mp4s, n=4, ids=[f"new{i}/0-10" for i in range(4)], mode="append")
    with pytest.raises(sila.SilaError, match="export refused") as refused:
        clips_lake.export(str(tmp_path / "refused"))
    msg = str(refused.value)
    assert "short (4 row(s)" in msg and f"sila run {code}:Short" in msg and "--allow-pending" in msg
    assert not (tmp_path / "refused" / ".sila-export" / "plan.json").exists()  # no plan kept
    cli = [str(BIN / "sila"), "export", "wds", "--lake", clips_lake.uri, "--json"]
    bad = subprocess.run([*cli, str(tmp_path / "cli")], capture_output=True, text=True)
    assert bad.returncode == 1 and "short" in bad.stdout + bad.stderr
    # --allow-pending ships only what is curated and says so in the manifest
    res = subprocess.run(
        [*cli, str(tmp_path / "allowed"), "--allow-pending"],
        capture_output=True,
        text=True,
        check=True,
    )
    man = json.loads((tmp_path / "allowed" / "manifest.json").read_text())
    # the new clips have no decision yet: a decision never computed is not "keep"
    assert json.loads(res.stdout)["samples"] == man["samples"] == kept
    assert man["pending"]["allowed"] and man["pending"]["stages"][0]["stage"] == "short"
    assert man["pending"]["stages"][0]["rows"] == 4 and "--allow-pending" in man["warnings"][-1]
    # once the stage has run, the new clips are judged and the export goes through
    assert clips_lake.run(f"{code}:Short")["state"] == "succeeded"
    done = clips_lake.export(str(tmp_path / "done"))
    assert "pending" not in done and done["samples"] == kept + 3  # new2's 6 s clip is too long


def test_audio_clips_and_undecided_rows_never_ship(clips_lake, tmp_path):
    ds = clips_lake.table("clips")

    def kind(batch: pa.RecordBatch) -> pa.RecordBatch:
        w = batch.column("video_width").to_pylist()
        return pa.record_batch(
            [pa.array(["audio" if x == 640 else "video" for x in w])], ["clip_kind"]
        )

    ds.add_columns(kind, read_columns=["video_width"])
    ds = clips_lake.table("clips")
    audio = ds.count_rows(filter="clip_kind = 'audio'")
    assert audio == 6
    man = clips_lake.export(str(tmp_path / "all"), default_selection=False)
    assert man["samples"] == 24 - audio
    for shard in (tmp_path / "all").rglob("*.tar"):
        for s in wds.WebDataset(str(shard), shardshuffle=False):
            assert "m4a" not in s and json.loads(s["json"])["clip_kind"] == "video"
