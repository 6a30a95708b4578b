"""`assign_split` reads its group column as an ordinary input: rows appended later join their
group; a chronological split is a global fit over every group's earliest time."""

from __future__ import annotations

import lance
import pyarrow as pa

import sila


def clips(ids: list[int], session: list[str | None], t: list[float]) -> pa.Table:
    return pa.table({"id": [f"c{i}" for i in ids], "session": session, "t": t})


def splits(lake: sila.Lake) -> dict[str, tuple]:
    rows = lake.table("clips").to_table(
        columns=["id", "split", "split_group", "assign_split_error"]
    )
    return {
        r["id"]: (r["split"], r["split_group"], r["assign_split_error"]) for r in rows.to_pylist()
    }


def test_rows_appended_later_join_their_group_and_a_null_group_is_a_row_error(tmp_path):
    lake = sila.Lake(tmp_path / "lake").init()
    groups = [f"s{i % 8}" for i in range(24)]
    lance.write_dataset(clips(list(range(24)), groups, [0.0] * 24), lake.table_uri("clips"),
                        max_rows_per_file=6)  # fmt: skip
    conf = {"by": "session", "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}}
    assert lake.run("assign_split", settings=conf)["state"] == "succeeded"
    first = splits(lake)
    per_group = {first[f"c{i}"][1]: first[f"c{i}"][0] for i in range(24)}
    assert len(per_group) == 8 and len(set(per_group.values())) >= 2
    more = clips([24, 25, 26], ["s3", "s5", None], [0.0] * 3)
    lance.write_dataset(more, lake.table_uri("clips"), mode="append")
    job = lake.run("assign_split", settings=conf)
    assert job["state"] == "succeeded" and job["progress"]["rows"] == 3  # only the new rows
    got = splits(lake)
    assert got["c24"][:2] == (per_group["s3"], "s3") and got["c25"][:2] == (per_group["s5"], "s5")
    assert got["c26"][0] is None and "no 'session' value" in got["c26"][2]
    assert all(got[k] == v for k, v in first.items())  # assigned rows keep their split


def test_chronological_split_fits_group_times_and_names_the_refit_for_a_new_group(tmp_path):
    lake = sila.Lake(tmp_path / "lake").init()
    n = 10
    sessions = [f"g{i}" for i in range(n) for _ in range(2)]
    times = [float(10 * i + k) for i in range(n) for k in (5, 1)]  # earliest is the second row
    lance.write_dataset(clips(list(range(2 * n)), sessions, times), lake.table_uri("clips"),
                        max_rows_per_file=4)  # fmt: skip
    conf = {"by": "session", "time_column": "t", "ratios": {"train": 0.8, "test": 0.2}}
    assert lake.run("assign_split", settings=conf)["state"] == "succeeded"
    got = splits(lake)
    by_group = {v[1]: v[0] for v in got.values()}
    assert [by_group[f"g{i}"] for i in range(n)] == ["train"] * 8 + ["test"] * 2
    lance.write_dataset(clips([99], ["g_new"], [1.0]), lake.table_uri("clips"), mode="append")
    assert lake.run("assign_split", settings=conf)["state"] == "succeeded"
    late = splits(lake)["c99"]
    assert late[0] is None and "--recompute" in late[2]  # never a guess across splits
    assert lake.run("assign_split", settings=conf, recompute=True)["state"] == "succeeded"
    again = splits(lake)
    assert again["c99"][0] == "train" and all(v[2] is None for v in again.values())
