"""The what-if page: change a threshold, see the counts and flipped rows change before anything
runs; the apply command it shows runs the stage, and the stored result equals the prediction."""

from __future__ import annotations

import shlex
import subprocess

import pytest

import sila
from tests.conftest import BIN
from tests.test_whatif import STAGE
from tests.viewer.test_pages import clear_caches, page, texts


@pytest.fixture
def decided_env(tmp_path, corpus, monkeypatch) -> sila.Lake:
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([p for n, p in corpus.items() if n != "_dir"])
    assert lake.run(STAGE)["state"] == "succeeded"
    monkeypatch.setenv("SILA_VIEW_LAKE", lake.uri)
    clear_caches()
    return lake


def _stored(lake: sila.Lake) -> dict:
    t = lake.table("sources").to_table(columns=["id", "length_keep"])
    return dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))


def test_whatif_page_predicts_then_its_command_applies_the_prediction(decided_env):
    from sila.coordinator.ops.whatif import what_if

    lake = decided_env
    at = page("whatif.py")
    assert "no rule changed yet" in texts(at)
    at.number_input(key="whatif_length_min_duration_s").set_value(2.5).run()
    assert not at.exception
    want = what_if(lake, "length", {"min_duration_s": 2.5})
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["rows that flip"] == str(want.flips_total) and want.flips_total > 0
    assert metrics["kept"] == str(want.after.kept)
    body = texts(at)
    assert f"rows that flip** (first {len(want.flips)} of {want.flips_total})" in body
    (cmd,) = [c.value for c in at.code if "--apply" in c.value]
    assert "--set length.min_duration_s=2.5" in cmd
    res = subprocess.run(
        [str(BIN / "sila"), *shlex.split(cmd)[1:]], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert _stored(lake) == want.predicted  # the re-run's result is the page's prediction
    clear_caches()
    at = page("whatif.py")  # the applied rules are now the current ones: nothing flips
    at.number_input(key="whatif_length_min_duration_s").set_value(2.5).run()
    assert "no rule changed yet" in texts(at)
