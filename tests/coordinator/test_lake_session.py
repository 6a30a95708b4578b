"""One Lance session per lake (issue 28): every open of a lake's tables in a process shares its
caches, and a shared cache never hides a commit made elsewhere."""

from __future__ import annotations

import lance
import pyarrow as pa

import sila
from tests.conftest import make_numbers


def test_every_open_of_a_lake_shares_one_session(lake, tmp_path):
    make_numbers(lake, 2, 10)
    lake.create_table("other", pa.table({"id": ["a"]}))
    again = sila.Lake(lake.uri)  # another Lake object for the same lake: the same session
    opened = [lake.table("nums"), lake.table("other"), again.table("nums")]
    assert all(ds.session().is_same_as(lake.session) for ds in opened)
    assert again.session is lake.session
    elsewhere = sila.Lake(tmp_path / "elsewhere").init()
    assert not elsewhere.session.is_same_as(lake.session)  # another lake: its own caches


def test_a_commit_from_outside_the_session_is_seen_by_the_next_open(lake):
    make_numbers(lake, 2, 10)
    before = lake.table("nums")
    assert before.count_rows() == 20
    # another process's append (no session): the next open sees the new version
    lance.write_dataset(pa.table({"id": ["z"], "x": [99.0]}), lake.table_uri("nums"), mode="append")
    after = lake.table("nums")
    assert after.version == before.version + 1 and after.count_rows() == 21
    assert lake.table("nums", version=before.version).count_rows() == 20
