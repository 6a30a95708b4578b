"""One definition of done (issue 28, defect 6), as each caller meets it.

A fragment a `--where` run computed in part holds every column of the stage, yet is not done:
discovery, status, a claim and a commit all say so alike; a rollback and the stamping of column
facts still see its values; a fragment compaction took away is GONE, never "done".
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from sila.coordinator.columns import prepare_columns
from sila.coordinator.discovery import (
    StageProgress,
    fragment_states,
    holding_values,
    split_fragments,
)
from sila.coordinator.options import WorkerOptions
from sila.coordinator.run import _rollback_columns
from sila.coordinator.state import DONE, GONE, PARTIAL
from sila.coordinator.worker import FragmentWorker

from sila.column_stamp import stamp_columns
from sila.errors import StaleColumnsError
from sila.registry import resolve
from tests.conftest import make_numbers

STAGES = """
import pyarrow as pa, pyarrow.compute as pc
from sila import Stage

class Scale(Stage):
    name = "scale"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("y", pa.float64())]
    def compute(self, batch):
        return {"y": pc.multiply(batch["x"], 2.0)}

class Keep(Stage):  # a decision column
    name = "keep"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("small_keep", pa.bool_())]
    def compute(self, batch):
        return {"small_keep": pc.less(batch["x"], 10.0)}

class Gated(Stage):  # computes only rows no decision rejected
    name = "gated"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("g", pa.float64())]
    settings = {"gate": "auto"}
    def gate(self):
        return self.config["gate"]
    def compute(self, batch):
        return {"g": batch["x"]}
"""

ROWS = 20  # per fragment; two fragments: x 0..19 on fragment 0, 20..39 on fragment 1


@pytest.fixture
def scale(tmp_path, lake):
    p = tmp_path / "done_stages.py"
    p.write_text(STAGES)
    make_numbers(lake, 2, ROWS)
    return f"{p}:Scale"


def _worker(lake, spec: str, events: list) -> FragmentWorker:
    """A plain run's worker, built as `sila run` builds it (columns ready, stage set up)."""
    stage = resolve(spec)()
    identity = stage.work_identity()
    prepare_columns(lake, stage, identity=identity)
    w = FragmentWorker(lake, stage, WorkerOptions(job="plain", identity=identity), events.append)
    w.runner.start()
    return w


def _age_listing(w: FragmentWorker) -> None:
    """As if the worker's listing (and its fresh manifest) were seconds old."""
    w.claims._listed_at -= 10
    w.claims._fresh_at -= 10


def _states(lake, spec: str) -> list[str]:
    return [w.status for w in fragment_states(lake.table("nums"), resolve(spec), lake.store)]


def _ys(lake) -> list:
    t = lake.table("nums").to_table(columns=["x", "y"])
    order = np.argsort(t["x"].to_numpy())
    return [t["y"].to_pylist()[i] for i in order]


def test_discovery_and_status_call_a_where_run_partial(lake, scale):
    lake.run(scale, where="x < 5 OR x >= 20")  # all of fragment 1, a part of fragment 0
    assert _states(lake, scale) == [PARTIAL, DONE]
    done, not_done = split_fragments(lake.table("nums"), resolve(scale), lake.store)
    assert ([r.id for r in done], [r.id for r in not_done]) == ([1], [0])
    st = lake.status()["tables"]["nums"]["stages"]["scale"]
    assert (st["fragments_done"], st["fragments_partial"], st["fragments_pending"]) == (1, 1, 0)


def test_status_judges_a_gated_stage_as_its_run_did(lake, scale):
    gated = scale.replace(":Scale", ":Gated")
    lake.run(scale.replace(":Scale", ":Keep"))
    assert lake.run(gated)["progress"]["rows"] == 10  # the gate let fragment 0's x < 10 through
    st = lake.status()["tables"]["nums"]["stages"]["gated"]
    assert (st["fragments_done"], st["fragments_partial"]) == (2, 0)
    assert lake.run(gated)["progress"]["rows"] == 0  # the run agrees: nothing left to do
    ungated = lake.run(gated, settings={"gate": "none"})  # the latest job: no gate
    assert ungated["progress"]["rows"] == 40  # other settings, another identity: every row
    st = lake.status()["tables"]["nums"]["stages"]["gated"]
    assert (st["fragments_done"], st["fragments_partial"]) == (2, 0)


def test_a_claim_takes_a_fragment_a_peer_left_partial_and_lets_a_finished_one_go(lake, scale):
    w = _worker(lake, scale, [])
    listed, _ = w.claims.candidates()  # both fragments pending in this listing
    lake.run(scale, where="x < 5 OR x >= 20")  # a peer: fragment 0 partial, 1 complete
    _age_listing(w)  # the listing is old: the claim looks again
    by_id = {work.ref.id: work for work in listed}
    assert w.claims.claim(by_id[0]) is not None  # partial is not done: claimed
    assert w.claims.claim(by_id[1]) is None  # finished by the peer: let go


def test_a_commit_keeps_a_fragment_a_peer_left_partial(lake, scale):
    events: list = []
    w = _worker(lake, scale, events)
    listed, _ = w.claims.candidates()
    lake.run(scale, where="x < 5 OR x >= 20")  # a peer: 0 in part, 1 whole, after our listing
    w.claims._listed_at = time.monotonic()  # a fresh listing: the claim trusts it
    task = w.claims.claim(next(work for work in listed if work.ref.id == 0))
    assert w._process(task) is task and task.written
    w.committer.add(task)
    w.committer.flush()
    assert sum(e.get("fragments_done", 0) for e in events) == 1  # committed, not skipped
    assert sum(e.get("fragments_skipped", 0) for e in events) == 0
    assert _ys(lake) == [2.0 * x for x in range(2 * ROWS)]
    assert _states(lake, scale) == [DONE, DONE]


def test_a_rollback_keeps_columns_holding_partial_values(lake, scale):
    cls = resolve(scale)
    prepare_columns(lake, cls(), identity=cls().work_identity())  # created, nothing committed
    _rollback_columns(lake, cls)
    assert "y" not in lake.table("nums").schema.names  # unused: dropped
    lake.run(scale, where="x < 5")
    assert [r.id for r in holding_values(lake.table("nums"), "scale")] == [0, 1]
    _rollback_columns(lake, cls)  # as if a later run failed: the partial values stay
    assert _ys(lake)[:5] == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_stamping_refuses_to_mix_facts_with_partial_values(lake, scale):
    cls = resolve(scale)
    prepare_columns(lake, cls(), identity=cls().work_identity())
    stamp_columns(lake, "nums", "scale", {"sila.model": "a"}, guarded=["sila.model"])
    stamp_columns(lake, "nums", "scale", {"sila.model": "b"}, guarded=["sila.model"])  # no values
    lake.run(scale, where="x < 5")  # partial fragments hold values computed with model b
    assert _states(lake, scale) == [PARTIAL, PARTIAL]
    with pytest.raises(StaleColumnsError, match="2 fragment"):
        stamp_columns(lake, "nums", "scale", {"sila.model": "c"}, guarded=["sila.model"])


def test_a_compacted_fragment_is_gone_for_claim_and_commit(lake, scale, caplog):
    events: list = []
    w = _worker(lake, scale, events)
    listed, _ = w.claims.candidates()
    task = w.claims.claim(listed[0])
    w._process(task)
    lake.table("nums").optimize.compact_files(target_rows_per_fragment=10 * ROWS)
    fresh = lake.table("nums")
    assert len(fresh.get_fragments()) == 1
    assert StageProgress(lake.store, w.stage).now(fresh, listed[1]).status == GONE
    _age_listing(w)
    assert w.claims.claim(listed[1]) is None
    w.committer.add(task)
    with caplog.at_level(logging.INFO, logger="sila.coordinator.commit"):
        w.committer.flush()  # no DataReplacement into a fragment that is not there
    assert "left the table before their commit" in caplog.text
    assert sum(e.get("fragments_skipped", 0) for e in events) == 1
    assert lake.table("nums").count_rows("y IS NOT NULL") == 0
