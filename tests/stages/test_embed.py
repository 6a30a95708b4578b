"""embed: weights from local files only, absent weights fail the job at setup, random weights
only behind the flag and recorded; weights that appear between runs never mix with random
vectors; search from Python and the CLI says when the weights are random."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sila.stages.clip_model import WeightsMissing
from typer.testing import CliRunner

from tests.clip_lake import clips_table

TINY = str(Path(__file__).parent / "data" / "sila-tiny-clip.json")  # a 2-layer open_clip ViT


def _facts(lake, column="embedding") -> dict:
    f = lake.table("clips").schema.field(column)
    return {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}


def test_absent_weights_fail_the_job_at_setup_naming_the_fix(lake, clip_media, monkeypatch):
    monkeypatch.delenv("SILA_CLIP_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clips_table(lake, clip_media)
    with pytest.raises(WeightsMissing) as e:
        lake.run("embed")
    msg = str(e.value)
    assert "SILA_CLIP_WEIGHTS=" in msg and "create_model_and_transforms" in msg
    assert "--allow-random-weights" in msg
    assert "embedding" not in lake.table("clips").schema.names  # nothing half-written
    monkeypatch.setenv("SILA_CLIP_WEIGHTS", "/no/such/weights.safetensors")
    with pytest.raises(WeightsMissing, match="/no/such/weights.safetensors"):
        lake.run("embed")


def test_random_weights_are_flagged_then_real_weights_require_recompute(
    lake, clip_media, tmp_path, monkeypatch
):
    import torch

    monkeypatch.delenv("SILA_CLIP_WEIGHTS", raising=False)
    clips_table(lake, clip_media)
    conf = {"model": TINY, "pretrained": "", "frames": 4}
    job = lake.run("embed", settings=conf, allow_random_weights=True)
    assert job["state"] == "succeeded"
    facts = _facts(lake)
    assert facts["sila.random_weights"] == "true"
    assert facts["sila.model"] == "open_clip:sila-tiny-clip/RANDOM-WEIGHTS"
    t = lake.table("clips").to_table(columns=["id", "embedding", "embed_frames", "embed_error"])
    rows = {r["id"]: r for r in t.to_pylist()}
    bad = rows.pop("bad/0-1")
    assert bad["embedding"] is None and "could not open" in bad["embed_error"]
    assert "/tmp/sila-blobs" not in bad["embed_error"]  # never a temporary copy's path
    for r in rows.values():
        assert r["embed_error"] is None and r["embed_frames"] == 4
        assert abs(np.linalg.norm(r["embedding"]) - 1.0) < 1e-4

    # zero-shot tags from the same (random) model: the mechanics, flagged as random
    job = lake.run(
        "tag",
        settings={"model": TINY, "pretrained": "", "top_k": 3, "threshold": 0.0},
        allow_random_weights=True,
    )
    assert job["state"] == "succeeded"
    assert _facts(lake, "tags")["sila.random_weights"] == "true"
    for r in lake.table("clips").to_table(columns=["id", "tags", "tag_scores"]).to_pylist():
        if r["id"] == "bad/0-1":
            assert r["tags"] is None  # no embedding: outside the stage's where, no tags
            continue
        scores = [x["score"] for x in r["tag_scores"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        for t in r["tags"]:  # threshold 0: every label, and each child's parent with it
            if t.count("/") == 2:
                assert t.rsplit("/", 1)[0] in r["tags"]

    # the search says the vectors are random, from Python and from the CLI
    some = sorted(rows)[0]
    res = lake.search(like=some, k=3, columns=["embed_frames"])
    assert res.random_weights and res.exact and len(res.results) == 3
    assert all(r["id"] != some for r in res.results) and "embed_frames" in res.results[0]
    assert any("RANDOM" in n for n in res.notes)
    from sila.cli.main import app

    out = CliRunner().invoke(app, ["search", "a fractal", "--lake", lake.uri, "--k", "2"])
    assert out.exit_code == 0, out.output
    assert "RANDOM WEIGHTS" in out.output
    out = CliRunner().invoke(app, ["search", "--like", some, "--lake", lake.uri, "--json"])
    assert json.loads(out.stdout)["random_weights"] is True

    # weights appear (saved from a model of that architecture): the random vectors are stale,
    # so a plain run recomputes every fragment, and the columns stop saying RANDOM
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms("sila-tiny-clip")
    weights = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), weights)
    monkeypatch.setenv("SILA_CLIP_WEIGHTS", str(weights))
    job = lake.run("embed", settings=conf)
    assert job["state"] == "succeeded"
    assert job["progress"]["fragments_done"] == len(lake.table("clips").get_fragments())
    facts = _facts(lake)
    assert facts["sila.random_weights"] == "false" and facts["sila.open_clip_weights"] == str(
        weights
    )
    assert facts["sila.model"] == "open_clip:sila-tiny-clip/"
    assert not lake.search(like=some, k=2).random_weights
    # the weights go away again: the job fails at setup, the real vectors stay
    monkeypatch.setenv("SILA_CLIP_WEIGHTS", str(tmp_path / "gone.pt"))
    with pytest.raises(WeightsMissing):
        lake.run("embed", settings=conf, recompute=True)
    assert _facts(lake)["sila.random_weights"] == "false"
    assert lake.table("clips").count_rows("embedding IS NOT NULL") == len(rows)


@pytest.mark.skipif(not os.environ.get("SILA_CLIP_WEIGHTS"), reason="needs real ViT-B-32 weights")
def test_real_weights_copies_are_nearer_than_other_clips(lake, clip_media):
    clips_table(lake, clip_media, bad=False)
    assert lake.run("embed")["state"] == "succeeded"
    assert _facts(lake)["sila.random_weights"] == "false"
    t = lake.table("clips").to_table(columns=["truth_group", "embedding"]).to_pylist()
    g = np.array([r["truth_group"] for r in t])
    e = np.array([r["embedding"] for r in t])
    s = e @ e.T
    same = s[(g[:, None] == g[None, :]) & ~np.eye(len(g), dtype=bool)]
    assert same.mean() > s[g[:, None] != g[None, :]].mean() + 0.05
