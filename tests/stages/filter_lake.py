"""One lake of generated filter cases (`tests.gen.filter_cases.case_lake`), built once per session."""

from __future__ import annotations

import functools

import sila
from tests.gen.filter_cases import case_lake


@functools.cache
def build(root: str) -> tuple[sila.Lake, dict[str, str]]:
    """(lake, {case name: clip id}); cached so every test module shares one lake."""
    return case_lake(root, ocr_frames=1)


def rows(lake: sila.Lake, columns: list[str]) -> dict[str, dict]:
    tbl = lake.table("clips").to_table(columns=["id", *columns]).to_pylist()
    return {r["id"]: r for r in tbl}
