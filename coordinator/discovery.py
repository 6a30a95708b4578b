"""Work discovery: the one definition of what a stage still has to do on each fragment.

A fragment is DONE for a stage when its data files hold every column the stage owns (the
manifest) AND the state record of the file holding them (state.py) says it was computed
completely, under the current work identity, from the current upstream files. No record means
the file predates records or matches its columns' own identity: done. Everything else is
pending, partial, stale or deferred; a fragment that left the manifest is GONE.

Every caller judges through this module: discovery and status (`fragment_states`), a claim and
a commit re-checking one fragment (`StageProgress.now`), the rollback of a failed run and the
stamping of column facts (`holding_values`). Reading it needs the manifest and one listing of
the stage's records, never a data scan (LANCE_NOTES 5).
"""

from __future__ import annotations

import copy

import lance
from sila.coordinator.gating import bind_gate
from sila.coordinator.state import (
    DEFERRED,
    DONE,
    GONE,
    PENDING,
    Dependencies,
    FragmentJudge,
    FragmentRef,
    FragmentWork,
    StageRecords,
    dependencies,
    fragment_ref,
)
from sila.coordinator.store import Store

from sila.errors import SilaError
from sila.schema import owner, spec_of, version_of
from sila.stage import Stage

# A fragment whose upstream stages (through `inputs` or `where`, a bound gate included) are not
# done on it is DEFERRED, never computed from missing values: a pipeline may start a
# downstream enrich stage while its upstream still runs (ops/pipeline_plan.overlap).
DEFERS_UNFINISHED_UPSTREAM = True

__all__ = [
    "FragmentRef",
    "StageProgress",
    "as_run_binds",
    "column_versions",
    "fragment_ref",
    "fragment_states",
    "holding_values",
    "split_fragments",
    "stage_class_of",
]


class StageProgress:
    """What one stage has done on its table, judged one way for every caller.

    `store` None (a bare dataset, no lake): no records are read, so a fragment holding every
    column of the stage is done. `identity` None: any work identity counts as current.
    `reset=True` on a call: a planned column reset (new version, `--recompute`) has not happened
    yet in that dataset, so nothing in it is done."""

    def __init__(self, store: Store | None, stage, identity: str | None = None) -> None:
        self.stage, self.identity, self.store = stage, identity, store
        self.records = StageRecords(store, stage.table, stage.name) if store is not None else None
        self.deps = Dependencies()  # the stages it reads, as of the last `all`

    def all(self, ds: lance.LanceDataset, *, reset: bool = False) -> list[FragmentWork]:
        """Every fragment of `ds` (manifest + one listing per stage involved)."""
        self.deps = deps = dependencies(ds.schema, self.stage)
        upstream = (
            {u: StageRecords(self.store, self.stage.table, u).load() for u in deps.all}
            if self.store is not None
            else {}
        )
        records = self.records.load() if self.records is not None else {}
        judge = FragmentJudge(ds, self.stage, self.identity, deps)
        works = [judge(frag, records, upstream) for frag in ds.get_fragments()]
        return [_reset(w) for w in works] if reset else works

    def now(
        self, ds: lance.LanceDataset, since: FragmentWork, *, reset: bool = False
    ) -> FragmentWork:
        """`since`'s fragment judged again in `ds` (a newer manifest), e.g. before a claim or a
        commit: GONE when it left the manifest (its id is missing or now names another base
        file: compaction), DONE when someone finished it meanwhile.

        The records listed with `since` serve while the stage's data file is the one `since`
        saw; a file committed since then has its own records listed now. Upstream records are
        not re-read: a fragment that is not done may read as pending where `all` would say
        deferred."""
        frag = ds.get_fragment(since.ref.id)
        if frag is None or fragment_ref(frag).key != since.ref.key:
            return FragmentWork(since.ref, GONE)
        judge = FragmentJudge(ds, self.stage, self.identity, dependencies(ds.schema, self.stage))
        cached = self.records.cached() if self.records is not None else {}
        work = judge(frag, cached, {})
        if work.stem is not None and work.stem != since.stem and self.records is not None:
            work = judge(frag, {work.stem: self.records.of_stem(work.stem)}, {})
        return _reset(work) if reset else work


def _reset(w: FragmentWork) -> FragmentWork:
    """Before a planned column reset every fragment is computed again (deferred ones later)."""
    if w.status not in (DEFERRED, GONE):
        w.status, w.record = PENDING, None
    return w


def fragment_states(
    ds: lance.LanceDataset,
    stage,
    store: Store | None = None,
    identity: str | None = None,
    settings: dict | None = None,
) -> list[FragmentWork]:
    """Every fragment of `ds` as `stage` sees it: see `StageProgress`. `stage` is a job's stage
    instance, a stage class or a name whose class the columns' metadata names; a class is judged
    as a run binds it: built with `settings` (e.g. its latest job's) and gated on `ds`."""
    return StageProgress(store, as_run_binds(ds, stage, settings), identity).all(ds)


def split_fragments(
    ds: lance.LanceDataset, stage, store: Store | None = None, identity: str | None = None
) -> tuple[list[FragmentRef], list[FragmentRef]]:
    """(done, not done) fragments for `stage`: not done is pending, partial, stale or deferred."""
    works = fragment_states(ds, stage, store, identity)
    return [w.ref for w in works if w.status == DONE], [w.ref for w in works if w.status != DONE]


def pending_fragments(
    ds: lance.LanceDataset, stage, store: Store | None = None
) -> list[FragmentRef]:
    """Fragments `stage` has not done (see `split_fragments`)."""
    return split_fragments(ds, stage, store)[1]


def holding_values(ds: lance.LanceDataset, stage) -> list[FragmentRef]:
    """Fragments whose data files hold values of `stage`'s columns, done or not (partial and
    stale ones too): what a rollback must not drop and what a change of column facts would mix
    with. Records cannot change this answer, so none are read."""
    named = _stand_in(ds, stage) if isinstance(stage, str) else stage
    return [w.ref for w in StageProgress(None, named).all(ds) if w.has_values]


def column_versions(ds: lance.LanceDataset, stage: str) -> set[str]:
    """The versions `stage`'s columns were created under."""
    return {v for f in ds.schema if owner(f) == stage and (v := version_of(f))}


def stage_class_of(ds: lance.LanceDataset, stage: str):
    """The class of the stage named `stage`, found again through the spec its columns record;
    if it cannot be found (a user's file moved), a stand-in with its name and table that reads
    nothing else: judging never fails because of that."""
    spec = next((s for f in ds.schema if owner(f) == stage and (s := spec_of(f))), None)
    if spec:
        try:
            from sila.registry import resolve

            return resolve(spec)
        except Exception:  # noqa: BLE001 - any import failure of user code: the stand-in
            pass
    return _stand_in(ds, stage)


def _stand_in(ds: lance.LanceDataset, stage: str):
    """A stage named `stage` on `ds`'s table that reads nothing (no inputs, no `where`)."""
    table = ds.uri.rstrip("/").rsplit("/", 1)[-1].removesuffix(".lance")
    from sila.stage import Stage

    attrs = {"name": stage, "inputs": [], "where": None, "table": table, "version": "unknown"}
    return type("UnknownStage", (Stage,), attrs)


def as_run_binds(ds: lance.LanceDataset, stage, settings: dict | None = None):
    """`stage` as a run's workers see it: an instance carrying the `where` a job on `ds` would
    bind (declared `where` plus its gate), so records written by runs judge alike here. An
    instance is copied, then bound; a name or a class is built with `settings` (those it has),
    else with its defaults."""
    if isinstance(stage, str):
        stage = stage_class_of(ds, stage)
    if isinstance(stage, Stage):  # the caller's instance stays as it was: bind a copy
        return bind_gate(copy.copy(stage), ds.schema)
    if not (isinstance(stage, type) and issubclass(stage, Stage)):
        return stage  # a stand-in: reads nothing
    plain = {k: v for k, v in (settings or {}).items() if k in stage.settings}
    try:
        instance = stage(**plain)
    except SilaError:
        instance = stage()
    return bind_gate(instance, ds.schema)
