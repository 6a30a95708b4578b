"""Work discovery from fragment metadata only: which fragments lack a stage's output fields.

A fragment is DONE for a stage when its data files hold every top-level field id the stage
owns. Reading this needs the manifest alone, never a data scan (LANCE_NOTES 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import lance

from sila.schema import owner, version_of


@dataclass(frozen=True)
class FragmentRef:
    """A fragment and its identity: id plus its base data file (ids are reused by compaction)."""

    id: int
    key: str  # "<id>-<first data file stem>": leases and checkpoints are keyed by it
    physical_rows: int


def stage_field_ids(ds: lance.LanceDataset, stage: str) -> dict[str, int]:
    """Top-level field ids owned by `stage`, by column name."""
    return {name: ids[0] for name, ids in _stage_fields(ds, stage).items()}


def _stage_fields(ds: lance.LanceDataset, stage: str) -> dict[str, frozenset[int]]:
    """Every field id of each column `stage` owns: a data file lists the innermost ids of list
    and struct columns, not the top-level one, so a column is present if any of its ids is."""

    def ids(f) -> list[int]:
        out = [f.id()]
        for c in f.children():
            out += ids(c)
        return out

    return {
        f.name(): frozenset(ids(f))
        for f in ds.lance_schema.fields()
        if owner(f.to_arrow()) == stage
    }


def _has_all(columns: dict[str, frozenset[int]], have: set[int]) -> bool:
    return bool(columns) and all(ids & have for ids in columns.values())


def fragment_ref(frag) -> FragmentRef:
    files = frag.data_files()
    base = files[0].path.rsplit("/", 1)[-1].removesuffix(".lance") if files else "empty"
    return FragmentRef(frag.fragment_id, f"{frag.fragment_id}-{base[:16]}", frag.physical_rows)


def split_fragments(
    ds: lance.LanceDataset, stage: str
) -> tuple[list[FragmentRef], list[FragmentRef]]:
    """(done, pending) fragments for `stage`, from the manifest alone."""
    wanted = _stage_fields(ds, stage)
    done: list[FragmentRef] = []
    pending: list[FragmentRef] = []
    for frag in ds.get_fragments():
        have: set[int] = set()
        for df in frag.data_files():
            have.update(df.fields)
        ref = fragment_ref(frag)
        (done if _has_all(wanted, have) else pending).append(ref)
    return done, pending


def pending_fragments(ds: lance.LanceDataset, stage: str) -> list[FragmentRef]:
    return split_fragments(ds, stage)[1]


def is_done(ds: lance.LanceDataset, stage: str, fragment_id: int) -> bool:
    wanted = _stage_fields(ds, stage)
    try:
        frag = ds.get_fragment(fragment_id)
    except Exception:
        return True  # gone (compacted away): nothing left to do for this id
    if frag is None:
        return True
    have: set[int] = set()
    for df in frag.data_files():
        have.update(df.fields)
    return _has_all(wanted, have)


def column_versions(ds: lance.LanceDataset, stage: str) -> set[str]:
    return {v for f in ds.schema if owner(f) == stage and (v := version_of(f))}
