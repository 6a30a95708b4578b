"""Episodes against held-out truth (issue 35), as a user hits them: more episodes after a
pipeline ran, bad values in one episode beside good ones, a late LeRobot state stream, a v3
dataset with two cameras, ingest and transcode from different directories, and a normaliser
fitted before and after the split exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sila
from sila.errors import SilaError
from sila.registry import registered, resolve
from sila.schema import INGEST, owner
from tests.episode_data import generic_dataset, lerobot_v2, lerobot_v3, video


def _edit_v2_episode(root: Path, episode: int, edit) -> None:
    """Rewrite one LeRobot v2 episode's data file with `edit(table) -> table`."""
    p = root / f"data/chunk-000/episode_{episode:06d}.parquet"
    pq.write_table(edit(pq.read_table(p)), p)


def _edit_generic_streams(root: Path, episode: int, **changes) -> None:
    p = root / f"ep{episode:02d}" / "streams.npz"
    data = dict(np.load(p))
    for k, fn in changes.items():
        data[k] = fn(data[k].copy())
    np.savez(p, **data)


def _set_state(table: pa.Table, rows: list[int], cols: list[int], value) -> pa.Table:
    state = np.asarray(table.column("observation.state").to_pylist(), dtype=np.float64)
    for r in rows:
        state[r, cols] = value(state[r, cols]) if callable(value) else value
    i = table.schema.get_field_index("observation.state")
    return table.set_column(i, "observation.state", pa.array(state.tolist()))


def _stage_field_ids(ds) -> dict[str, set[int]]:
    """Per stage owning columns of `ds`: the Lance field ids of those columns (children too)."""

    def ids(f) -> list[int]:
        return [f.id(), *[i for c in f.children() for i in ids(c)]]

    out: dict[str, set[int]] = {}
    for f in ds.lance_schema.fields():
        o = owner(f.to_arrow())
        if o and o != INGEST:
            out.setdefault(o, set()).update(ids(f))
    return out


def test_episodes_ingested_after_a_pipeline_are_never_counted_done(tmp_path):
    gen = generic_dataset(tmp_path / "gen", episodes=2)
    lake = sila.Lake(tmp_path / "lake").init()
    assert lake.ingest([str(gen)]).added == 2
    on_sources = sorted(n for n in registered() if resolve(n).table == "sources")
    assert "windows" in on_sources
    for name in on_sources:  # every stage of `sources` has its columns and is done
        assert lake.run(name)["state"] == "succeeded", name
    first = {f.fragment_id for f in lake.table("sources").get_fragments()}
    assert lake.table("clips").count_rows() == 4

    rep = lake.ingest([str(lerobot_v2(tmp_path / "v2", episodes=3))])
    assert rep.added == 3 and rep.fragments == 1  # the report counts the fragment it wrote

    ds = lake.table("sources")
    owned = _stage_field_ids(ds)
    assert set(on_sources) <= set(owned)
    new = [f for f in ds.get_fragments() if f.fragment_id not in first]
    for frag in new:  # the general rule: an ingest writes no stage's column, for any stage
        written = set().union(*(set(df.fields) for df in frag.data_files()))
        for stage, ids in owned.items():
            assert not written & ids, f"ingest wrote {stage}'s columns"
    status = lake.status()["tables"]["sources"]["stages"]
    for name in on_sources:
        assert status[name]["fragments_pending"] == len(new), (name, status[name])
        assert status[name]["coverage"] < 1.0
    assert lake.run("windows")["state"] == "succeeded"
    per = lake.sql("select source_id, count(*) as n from clips group by 1").to_pylist()
    assert len(per) == 5  # all five episodes windowed, the three late ones included
    assert lake.status()["tables"]["sources"]["stages"]["windows"]["coverage"] == 1.0


def test_bad_values_and_empty_episodes_are_reported_the_rest_ingested(tmp_path):
    gen = generic_dataset(tmp_path / "gen", episodes=4)
    _edit_generic_streams(gen, 1, ego=lambda p: _nan_at(p, 7))  # a NaN pose
    _edit_generic_streams(gen, 2, t=lambda t: _nan_at(t, 5))  # a NaN timestamp
    _edit_generic_streams(gen, 3, left_wrist=lambda p: _scale_rot(p, 12, 1.5))  # not a rotation
    v2 = lerobot_v2(tmp_path / "v2", episodes=4)
    _edit_v2_episode(v2, 1, lambda t: t.slice(0, 0))  # 0 frames
    _edit_v2_episode(v2, 2, lambda t: _set_state(t, [3], [3, 4, 5, 6], 0.0))  # zero quaternion
    _edit_v2_episode(v2, 3, lambda t: _set_state(t, [4], [0], float("nan")))  # NaN position
    lake = sila.Lake(tmp_path / "lake").init()
    rep = lake.ingest([str(gen), str(v2)])
    assert rep.added == 2 and rep.failed == 6
    errors = sorted(f["error"] for f in rep.failures)
    expect = [
        ("ep01", "stream 'ego' has 1 non-finite sample(s), first at sample 7"),
        ("ep02", "stream 'ego' has 1 non-finite timestamp(s), first at sample 5"),
        ("ep03", "stream 'left_wrist' sample 12 is not a rotation"),
        ("episode 1", "0 frame(s) in its data file"),
        ("episode 2", "stream 'observation.state' quaternion at sample 3 has norm 0"),
        ("episode 3", "stream 'observation.state' has 1 non-finite sample(s), first at sample 4"),
    ]
    for where, what in expect:
        assert any(where in e and what in e for e in errors), (where, what, errors)
    rows = lake.sql("select traj_ee, traj_ego from sources").to_pylist()
    for r in rows:
        for traj in (r["traj_ee"], r["traj_ego"]):
            assert traj is None or np.isfinite(np.asarray(traj)).all()


def _nan_at(a: np.ndarray, i: int) -> np.ndarray:
    a = a.astype(np.float64)
    a[i] = np.nan
    return a


def _scale_rot(p: np.ndarray, i: int, k: float) -> np.ndarray:
    p[i, :3, :3] *= k
    return p


def test_near_unit_quaternions_are_repaired_and_counted(tmp_path):
    v2 = lerobot_v2(tmp_path / "v2", episodes=1)
    _edit_v2_episode(v2, 0, lambda t: _set_state(t, [2, 5], [3, 4, 5, 6], lambda q: q * 1.004))
    lake = sila.Lake(tmp_path / "lake").init()
    assert lake.ingest([str(v2)]).added == 1
    (meta,) = lake.sql("select episode_meta from sources").column(0).to_pylist()
    assert json.loads(meta)["repaired"]["observation.state quaternion"] == 2
    gen = generic_dataset(tmp_path / "gen", episodes=1)
    _edit_generic_streams(gen, 0, ego=lambda p: _scale_rot(p, 4, 1.002))  # rounding, repaired
    assert lake.ingest([str(gen)]).added == 1
    meta = lake.sql("select episode_meta from sources where embodiment = 'egocentric'")
    assert json.loads(meta.column(0)[0].as_py())["repaired"] == {"ego": 1}


def test_a_late_lerobot_state_stream_is_refused_like_the_generic_layout(tmp_path):
    v2 = lerobot_v2(tmp_path / "v2", episodes=2)

    def late(t: pa.Table) -> pa.Table:
        ts = t.column("timestamp").to_numpy() + np.float32(0.5)
        return t.set_column(t.schema.get_field_index("timestamp"), "timestamp", pa.array(ts))

    _edit_v2_episode(v2, 1, late)
    rep = sila.Lake(tmp_path / "lake").init().ingest([str(v2)])
    assert rep.added == 1 and rep.failed == 1
    (fail,) = rep.failures
    assert "episode 1" in fail["error"]
    assert "stream 'timestamp' starts 0.500 s after the video" in fail["error"]


def test_v3_second_camera_keeps_its_own_offset(tmp_path):
    v3 = lerobot_v3(tmp_path / "v3", episodes=3, wrist_lead_s=0.5)
    lake = sila.Lake(tmp_path / "lake").init()
    assert lake.ingest([str(v3)]).added == 3
    rows = lake.sql(
        "select episode_index, cameras, camera_uris, camera_offsets_s, video_offset_s "
        "from sources order by episode_index"
    ).to_pylist()
    for e, r in enumerate(rows):
        assert r["cameras"] == ["top", "wrist"]
        assert r["camera_uris"][1].endswith("observation.images.wrist/chunk-000/file-000.mp4")
        assert r["video_offset_s"] == pytest.approx(3.0 * e)
        assert r["camera_offsets_s"] == pytest.approx([3.0 * e, 0.5 + 3.0 * e])
    short = lerobot_v3(tmp_path / "short", episodes=3, wrist_lead_s=0.5)
    video(short / "videos/observation.images.wrist/chunk-000/file-000.mp4", 90)  # lost its lead
    rep = lake.ingest([str(short)])
    (fail,) = rep.failures
    assert "episode 2: needs video up to 9.500 s" in fail["error"]
    assert "observation.images.wrist/chunk-000/file-000.mp4 has 9.000 s" in fail["error"]


def test_lerobot_paths_are_absolute_transcode_runs_from_elsewhere(tmp_path, monkeypatch):
    lerobot_v2(tmp_path / "data" / "v2", episodes=2)
    monkeypatch.chdir(tmp_path / "data")
    lake = sila.Lake(tmp_path / "lake").init()
    assert lake.ingest(["v2"]).added == 2  # a relative path, as typed in a shell
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for r in lake.sql("select uri, camera_uris from sources").to_pylist():
        assert Path(r["uri"]).is_absolute() and Path(r["uri"]).is_file()
        assert all(Path(u).is_absolute() for u in r["camera_uris"])
    assert lake.run("windows")["state"] == "succeeded"
    assert lake.run("transcode")["state"] == "succeeded"
    t = lake.sql("select transcode_error from clips").column(0).to_pylist()
    assert len(t) == 2 and t == [None, None]


def test_normalize_before_the_split_is_refitted_after_it(tmp_path):
    gen = generic_dataset(tmp_path / "gen", episodes=4)
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([str(gen)])
    for name in ("windows", "actions", "normalize"):
        assert lake.run(name)["state"] == "succeeded"
    from sila.stages.normalize import load_normalizer

    assert load_normalizer(lake)["scope"] == "all rows"
    field = lake.table("clips").schema.field("actions_norm")
    before = field.metadata[b"sila.fit"]
    with pytest.raises(SilaError) as err:  # an episode column named on its windows
        lake.run("assign_split", settings={"by": "session_id"})
    assert "setting 'by' names column 'session_id'" in str(err.value)
    assert "'session_id' is a column of sources, not of clips" in str(err.value)
    assert "clips has: id, source_id," in str(err.value)
    assert lake.run("assign_split", settings={"ratios": {"train": 0.5, "val": 0.5}})["state"] == (
        "succeeded"
    )
    from sila.coordinator.run import due_work
    from sila.stages.normalize import Normalize

    assert due_work(lake, Normalize())[0] > 0  # a poller sees the stale fit as work
    job = lake.run("normalize")  # not "nothing to do": the fit's input scope changed
    assert job["state"] == "succeeded"
    assert load_normalizer(lake)["scope"] == "rows assigned to train"
    field = lake.table("clips").schema.field("actions_norm")
    assert field.metadata[b"sila.normalize_scope"] == b"rows assigned to train"
    assert field.metadata[b"sila.fit"] != before
    ds = lake.table("clips")
    assert ds.count_rows(filter="actions_norm IS NULL AND actions IS NOT NULL") == 0
    assert lake.status()["tables"]["clips"]["stages"]["normalize"]["coverage"] == 1.0
    assert due_work(lake, Normalize()) == (0, 0)  # and nothing once it is refitted


def test_a_non_finite_action_is_a_row_error():
    from sila.stages.actions import Actions

    poses = np.repeat(np.eye(4).reshape(1, 16), 10, 0)
    poses[4, 3] = np.nan
    out = Actions().map_rows(
        [{"embodiment": "camera", "traj": {"ego": poses}, "start": 0, "end": 10}]
    )
    assert (
        out["actions"] == [None] and "part 'ego' has non-finite actions" in out["actions_error"][0]
    )


def test_the_documented_hours_query_parses_and_counts_each_second_once(tmp_path):
    doc = (Path(__file__).parents[1] / "docs" / "episodes.md").read_text()
    query = doc.split("```sql\n", 1)[1].split("```", 1)[0]
    lake = sila.Lake(tmp_path / "lake").init()
    gen = generic_dataset(tmp_path / "gen", episodes=2, frames=45)
    lake.ingest([str(gen), str(lerobot_v2(tmp_path / "v2", episodes=2, frames=30))])
    # overlapping windows: summing their durations would count most seconds twice
    windows = {"window_frames": 20, "stride_frames": 10, "min_frames": 20}
    assert lake.run("windows", settings=windows)["state"] == "succeeded"
    assert lake.run("actions")["state"] == "succeeded"
    rows = lake.sql(query).to_pylist()
    assert [r["embodiment"] for r in rows] == ["egocentric", "robot"]
    assert [r["episodes"] for r in rows] == [2, 2]
    assert rows[0]["hours"] == pytest.approx(2 * 4.5 / 3600)
    assert rows[1]["hours"] == pytest.approx(2 * 3.0 / 3600)
    assert all(0.0 <= r["idle_fraction"] <= 1.0 for r in rows)


def test_the_fit_reads_arrow_buffers_and_leaves_non_finite_rows_out():
    from sila.stages.normalize import action_matrix, fit_stats, matrix_stats

    rng = np.random.default_rng(1)
    rows = [
        (rng.normal(size=(n, 67)).tolist(), [True, False, True, True, False, False, True])
        for n in (5, 19, 20)
    ]
    poisoned = rng.normal(size=(20, 67))
    poisoned[3, 2] = np.nan
    masks = [m for _, m in rows] + [[True] * 7]
    tbl = pa.table(
        {
            "actions": pa.array(
                [a for a, _ in rows] + [poisoned.tolist()], pa.list_(pa.list_(pa.float32()))
            ),
            "action_mask": pa.array(masks, pa.list_(pa.bool_())),
        }
    ).slice(0)
    matrix, present, excluded = action_matrix(tbl.take([3, 0, 1, 2]))
    assert excluded == 1
    got = matrix_stats(matrix, present)
    want = fit_stats([(np.float32(a).tolist(), m) for a, m in rows])
    for k in want:
        assert np.allclose(got[k], want[k], atol=1e-6), k
    assert got["count"][0] == 5 + 19 + 20 and got["count"][9] == 0  # left wrist absent


def test_ingest_memory_does_not_grow_with_the_number_of_episodes(tmp_path, monkeypatch):
    import tracemalloc

    from sila.episodes import ingest as episode_ingest

    monkeypatch.setattr(episode_ingest, "BATCH_BYTES", 2 << 20)  # ~3 episodes per batch
    warm = sila.Lake(tmp_path / "warm").init()  # first-use costs (imports, caches) kept apart
    warm.ingest([str(generic_dataset(tmp_path / "warm_gen", episodes=1, frames=100))])
    peaks = {}
    for n in (2, 8):
        gen = generic_dataset(tmp_path / f"gen{n}", episodes=n, frames=1500)
        lake = sila.Lake(tmp_path / f"lake{n}").init()
        tracemalloc.start()
        rep = lake.ingest([str(gen)])
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert rep.added == n
    # the whole 8-episode dataset is ~4x the 2-episode one; a streamed ingest holds one batch
    assert peaks[8] < 1.5 * peaks[2], peaks


def test_the_fit_sample_is_bounded_and_drawn_while_streaming(tmp_path):
    import lance
    from sila.stages.normalize import bounded_sample

    n = 600
    acts = pa.array([[[float(i)] * 67] for i in range(n)], pa.list_(pa.list_(pa.float32())))
    tbl = pa.table({"actions": acts, "action_mask": pa.array([[True] * 7] * n)})
    ds = lance.write_dataset(tbl, tmp_path / "clips.lance", max_rows_per_file=50)
    one = bounded_sample(ds, "actions IS NOT NULL", 120, seed=0)
    assert 80 <= one.num_rows <= 160 and one.schema.names == ["actions", "action_mask"]
    again = bounded_sample(ds, "actions IS NOT NULL", 120, seed=0)
    assert again.column("actions").equals(one.column("actions"))  # a seeded, repeatable draw
    firsts = {a[0][0] for a in one.column("actions").to_pylist()}
    assert min(firsts) < 100 and max(firsts) > 500  # drawn across the whole table
    assert bounded_sample(ds, "actions IS NOT NULL", 1000, seed=0).num_rows == n


def test_camera_motion_skips_windows_whose_episode_has_poses(tmp_path):
    pytest.importorskip("cv2")
    gen = generic_dataset(tmp_path / "gen", episodes=2)
    (gen / "ep01" / "streams.npz").unlink()  # a pose-less episode: odometry is all it gets
    v2 = lerobot_v2(tmp_path / "v2", episodes=1)
    lake = sila.Lake(tmp_path / "lake").init()
    assert lake.ingest([str(gen), str(v2)]).added == 3
    for name in ("windows", "actions", "transcode", "camera_motion"):
        assert lake.run(name)["state"] == "succeeded", name
    rows = lake.sql(
        "select s.episode_index, c.needs_odometry, c.cam_rotation_deg, c.camera_motion_error "
        "from clips c join sources s on c.source_id = s.id order by s.embodiment, c.id"
    ).to_pylist()
    computed = [r for r in rows if r["cam_rotation_deg"] is not None]
    assert computed and all(r["needs_odometry"] for r in computed)
    assert all(r["cam_rotation_deg"] is None for r in rows if not r["needs_odometry"])
    assert sum(not r["needs_odometry"] for r in rows) == 2 + 1  # ep00's windows, the robot's
