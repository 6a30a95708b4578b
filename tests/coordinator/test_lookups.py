"""Declared lookups as a stage meets them: another table's columns joined by the declared key,
blobs as local paths, rows appended during the run found by one refresh, dotted inputs refused."""

from __future__ import annotations

import lance
import pyarrow as pa
import pytest
from sila.coordinator import lookups
from sila.coordinator.inputs import BlobMaterializer

import sila
from sila.errors import ContractError
from sila.schema import blob_field
from sila.stage import Lookup, Stage


def sources(ids: list[str]) -> pa.Table:
    return pa.table(
        {
            "id": ids,
            "kind": [f"kind-{i}" for i in ids],
            "media": pa.array([f"bytes of {i}".encode() for i in ids], pa.large_binary()),
        },
        schema=pa.schema([pa.field("id", pa.string()), pa.field("kind", pa.string()),
                          blob_field("media")]),
    )  # fmt: skip


@pytest.fixture
def lake(tmp_path) -> sila.Lake:
    lk = sila.Lake(tmp_path / "lake").init()
    lk.create_table("sources", sources(["a", "b", "c"]))
    clips = pa.table({"id": [f"c{i}" for i in range(6)],
                      "source_id": ["a", "b", "a", None, "zz", "c"]})  # fmt: skip
    lance.write_dataset(clips, lk.table_uri("clips"), max_rows_per_file=3)
    return lk


class SourceKind(Stage):
    name = "source_kind"
    table = "clips"
    inputs = ["id"]
    lookups = [Lookup("sources", ("kind", "media"), key="source_id")]
    outputs = [pa.field("kind_seen", pa.string()), pa.field("media_text", pa.string())]
    version = "1"

    def process_row(self, row):
        if row["sources.media"] is None:
            return {}
        with open(row["sources.media"], "rb") as fh:  # a blob arrives as a local file
            return {"kind_seen": row["sources.kind"], "media_text": fh.read().decode()}


def test_a_run_joins_by_the_declared_key_and_hands_blobs_as_files(lake):
    assert lake.run(SourceKind)["state"] == "succeeded"
    got = lake.table("clips").to_table(columns=["id", "kind_seen", "media_text"]).to_pylist()
    by = {r["id"]: r for r in got}
    assert by["c0"]["kind_seen"] == by["c2"]["kind_seen"] == "kind-a"
    assert by["c5"]["media_text"] == "bytes of c"
    assert by["c3"]["kind_seen"] is None and by["c4"]["kind_seen"] is None  # null / unknown key


def test_keys_appended_after_the_pin_are_found_by_one_refresh(lake, monkeypatch):
    monkeypatch.setattr(lookups, "KEY_CHUNK", 2)  # several IN (...) scans per segment
    pinned = lookups.pin_lookups(lake, SourceKind)
    lance.write_dataset(sources(["late"]), lake.table_uri("sources"), mode="append")
    blobs = BlobMaterializer(lake)
    reader = blobs.lookups
    lk = SourceKind.lookups[0]
    cols = reader.columns(lk, ["a", "b", "a", None, "c"], pinned["sources"])
    assert cols["sources.kind"].to_pylist() == ["kind-a", "kind-b", "kind-a", None, "kind-c"]
    assert reader.refreshes == 0 and reader.dataset("sources", None).version == pinned["sources"]
    cols = reader.columns(lk, ["late", "a", "nowhere"], pinned["sources"])
    assert cols["sources.kind"].to_pylist() == ["kind-late", "kind-a", None]
    with open(cols["sources.media"][0].as_py(), "rb") as fh:
        assert fh.read() == b"bytes of late"
    assert reader.refreshes == 1  # moved once; an unknown key does not refresh again
    assert reader.scanned == 3 + 2 + 2  # "late", "nowhere" twice (pin, latest); "a" kept
    cols = reader.columns(lk, ["nowhere", "late", "a"], pinned["sources"])
    assert reader.refreshes == 1 and reader.scanned == 7 + 1  # only "nowhere" again
    with open(cols["sources.media"][2].as_py(), "rb") as fh:
        assert fh.read() == b"bytes of a"
    blobs.close()


def test_a_dotted_input_is_refused_naming_lookup(lake):
    class Dotted(Stage):
        name = "dotted"
        table = "clips"
        inputs = ["sources.kind"]
        outputs = [pa.field("k", pa.string())]

    with pytest.raises(ContractError, match="Lookup"):
        Dotted.validate_declaration()
    with pytest.raises(ContractError, match="Lookup"):
        lookups.check_lookups(lake, Dotted, {"id", "source_id"})

    class WrongKey(SourceKind):
        name = "wrong_key"
        lookups = [Lookup("sources", ("kind",), key="episode_id")]

    with pytest.raises(ContractError, match="episode_id"):
        lake.run(WrongKey)
