"""What a stage's data file on a fragment holds: exact "done", partial, stale and deferred.

The manifest says WHICH data file holds a stage's columns on a fragment; a small immutable
record in `_sila/state/<table>/<stage>/<data-file stem>/` says under WHAT it was computed:

    <identity>.<inputs hash>.<where hash>.<c|p>.json   {"computed": <bitmap>, ...}

- identity: stage version + effective settings + model (`Stage.work_identity`);
- inputs hash: the data files the stage's inputs were read from (upstream stages' files):
  a recomputed upstream makes the values stale;
- where hash: the stage's own `where` and the data files of the stages it reads: when those
  change, rows that became eligible are computed, the others kept;
- c (complete: every row matching the stage's `where` was computed or errored) or p (partial:
  a run-time `--where` computed only some; the bitmap says which).

The record is written BEFORE the commit that puts its data file into the manifest, keyed by that
file's name: a crash in between leaves a record of a file nobody references (harmless), never a
committed file without a record. Discovery is the manifest plus ONE listing of these keys: no
data scan, no per-fragment read. A data file without any record predates this scheme: done.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass, field

import lance
import numpy as np
from sila.coordinator.store import Store

from sila.schema import owner

DONE, PENDING, PARTIAL, STALE, DEFERRED = "done", "pending", "partial", "stale", "deferred"
GONE = "gone"  # the fragment left the manifest (compacted or deleted) since it was listed


@dataclass(frozen=True)
class FragmentRef:
    """A fragment and its identity: id plus its base data file (ids are reused by compaction)."""

    id: int
    key: str  # "<id>-<first data file stem>": leases and checkpoints are keyed by it
    physical_rows: int


def fragment_ref(frag) -> FragmentRef:
    """The identity of a `LanceFragment` (its key names its base data file)."""
    files = frag.data_files()
    base = file_stem(files[0].path) if files else "empty"
    return FragmentRef(frag.fragment_id, f"{frag.fragment_id}-{base[:16]}", frag.physical_rows)


def short_hash(obj) -> str:
    raw = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(raw).hexdigest()[:10]


@functools.lru_cache(maxsize=65536)
def _hash_of(parts: tuple) -> str:
    return short_hash(list(parts))


def base_identity(ds: lance.LanceDataset, stage: str) -> str | None:
    """The identity the stage's columns were created under (field metadata): what a data file
    without a record was computed with. Records exist only for files that differ from it."""
    for f in ds.schema:
        if owner(f) == stage:
            v = (f.metadata or {}).get(b"sila.identity")
            return v.decode() if v else None
    return None


def file_stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".lance")


@dataclass(frozen=True)
class Record:
    stem: str
    identity: str
    inputs_hash: str
    where_hash: str
    complete: bool
    key: str


@dataclass(frozen=True)
class Dependencies:
    """Stages of the same table this stage reads: through `inputs` and through `where`."""

    inputs: tuple[str, ...] = ()
    where: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.inputs + self.where))


_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def where_columns(where: str | None, names: set[str]) -> set[str]:
    """Column names a SQL predicate mentions (string literals skipped)."""
    if not where:
        return set()
    return {t for t in _IDENT.findall(_QUOTED.sub(" ", where)) if t in names}


def dependencies(schema, stage_cls) -> Dependencies:
    own = stage_cls.name
    by_col = {f.name: owner(f) for f in schema}
    names = set(by_col)

    def owners(cols) -> tuple[str, ...]:
        return tuple(sorted({o for c in cols if (o := by_col.get(c)) and o not in (own, "ingest")}))

    plain = [c for c in stage_cls.inputs if "." not in c]
    return Dependencies(owners(plain), owners(where_columns(stage_cls.where, names)))


@dataclass
class FragmentWork:
    """One fragment as discovery sees it for a stage."""

    ref: FragmentRef
    status: str  # done | pending | partial | stale | deferred | gone
    stem: str | None = None  # the stage's current data file on it
    record: Record | None = None  # the record matching that file (partial: the rows computed)
    inputs_hash: str = ""
    where_hash: str = ""
    waiting_for: tuple[str, ...] = ()  # deferred: upstream stages not done on it

    @property
    def has_values(self) -> bool:
        """Replacing, not adding, a data file (and keeping values of rows not recomputed)."""
        return self.stem is not None


@dataclass
class StageRecords:
    """The records of one stage on one table (listed once per pass; they never change)."""

    store: Store
    table: str
    stage: str
    _cache: dict[str, list[Record]] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"state/{self.table}/{self.stage}"

    def load(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {}
        for e in self.store.list(self.prefix):
            rec = _parse(e.key)
            if rec is not None:
                out.setdefault(rec.stem, []).append(rec)
        self._cache = out
        return out

    def cached(self) -> dict[str, list[Record]]:
        """The records as last listed, plus those this process wrote since."""
        return self._cache

    def of_stem(self, stem: str) -> list[Record]:
        """The records of one data file, listed now (one narrow listing): for a file a peer
        committed after the last `load`."""
        got = [r for e in self.store.list(f"{self.prefix}/{stem}") if (r := _parse(e.key))]
        got = [r for r in got if r.stem == stem]
        self._cache[stem] = got
        return got

    def write(
        self,
        stem: str,
        identity: str,
        inputs_hash: str,
        where_hash: str,
        complete: bool,
        computed: np.ndarray | None,
        physical_rows: int,
        info: dict,
    ) -> Record:
        flag = "c" if complete else "p"
        key = f"{self.prefix}/{stem}/{identity}.{inputs_hash}.{where_hash}.{flag}.json"
        body = {**info, "written_at": time.time(), "physical_rows": physical_rows}
        if computed is not None:
            bits = np.zeros(physical_rows, dtype=bool)
            bits[computed.astype(np.int64)] = True
            body["computed"] = base64.b64encode(np.packbits(bits).tobytes()).decode()
        self.store.put(key, json.dumps(body).encode())
        rec = Record(stem, identity, inputs_hash, where_hash, complete, key)
        self._cache.setdefault(stem, []).append(rec)
        return rec

    def computed(self, rec: Record, physical_rows: int) -> np.ndarray | None:
        """Offsets computed under `rec` (None: every row its `where` selected, no bitmap)."""
        raw = self.store.get(rec.key)
        if raw is None:
            return None
        body = json.loads(raw)
        if "computed" not in body:
            return None
        bits = np.unpackbits(np.frombuffer(base64.b64decode(body["computed"]), dtype=np.uint8))
        return np.flatnonzero(bits[:physical_rows]).astype(np.uint32)

    def forget(self, stem: str) -> None:
        """Records of a data file that was replaced (the manifest no longer references it)."""
        self.store.delete_prefix(f"{self.prefix}/{stem}")
        self._cache.pop(stem, None)

    def clear(self) -> None:
        self.store.delete_prefix(self.prefix)
        self._cache = {}


def _parse(key: str) -> Record | None:
    parts = key.rsplit("/", 2)
    if len(parts) != 3 or not parts[2].endswith(".json"):
        return None
    bits = parts[2][:-5].split(".")
    if len(bits) != 4 or bits[3] not in ("c", "p"):
        return None
    return Record(parts[1], bits[0], bits[1], bits[2], bits[3] == "c", key)


def _stage_ids(ds: lance.LanceDataset) -> dict[str, dict[str, frozenset[int]]]:
    """Per stage, per owned column, every field id of that column (nested ones included)."""

    def ids(f) -> list[int]:
        out = [f.id()]
        for c in f.children():
            out += ids(c)
        return out

    out: dict[str, dict[str, frozenset[int]]] = {}
    for f in ds.lance_schema.fields():
        o = owner(f.to_arrow())
        if o:
            out.setdefault(o, {})[f.name()] = frozenset(ids(f))
    return out


def classify(
    ds: lance.LanceDataset,
    stage_cls,
    identity: str | None,
    records: dict[str, list[Record]],
    upstream: dict[str, dict[str, list[Record]]],
    deps: Dependencies,
) -> list[FragmentWork]:
    """Every fragment of `ds` for the stage, from the manifest and the listed records.

    `identity` None (status without a run): any identity counts as current (stale is then only
    what upstream changes make stale)."""
    judge = FragmentJudge(ds, stage_cls, identity, deps)
    return [judge(frag, records, upstream) for frag in ds.get_fragments()]


class FragmentJudge:
    """Judges fragments of one dataset version for one stage: the rule behind every "done".

    Built once per dataset (it reads the schema's field ids and the columns' identity); a call
    judges one `LanceFragment` against the records given."""

    def __init__(self, ds: lance.LanceDataset, stage_cls, identity: str | None, deps: Dependencies):
        owned = _stage_ids(ds)
        self.name, self.identity, self.deps = stage_cls.name, identity, deps
        self.where_text = stage_cls.where or ""
        self.base = base_identity(ds, stage_cls.name)
        self.stages = [(self.name, owned.get(self.name, {}))]
        self.stages += [(u, owned.get(u, {})) for u in deps.all]

    def __call__(
        self,
        frag,
        records: dict[str, list[Record]],
        upstream: dict[str, dict[str, list[Record]]],
    ) -> FragmentWork:
        files = [(frozenset(df.fields), df) for df in frag.data_files()]  # read once: slow-ish
        stems: dict[str, str | None] = {}  # stage -> stem of the data file holding its columns
        complete = {}  # stage -> all columns present
        have = frozenset().union(*(f for f, _ in files))
        for st, cols in self.stages:
            hit = next((df for f, df in files if any(ids & f for ids in cols.values())), None)
            stems[st] = file_stem(hit.path) if hit is not None else None
            complete[st] = bool(cols) and all(ids & have for ids in cols.values())
        base_file = file_stem(files[0][1].path) if files else "empty"
        ref = FragmentRef(
            frag.fragment_id, f"{frag.fragment_id}-{base_file[:16]}", frag.physical_rows
        )
        deps = self.deps
        waiting = tuple(
            u
            for u in deps.all
            if not complete[u] or not _upstream_complete(upstream.get(u, {}), stems[u])
        )
        inputs_hash = _hash_of(tuple(stems[u] for u in deps.inputs))
        where_hash = _hash_of((self.where_text, *[stems[u] for u in deps.where]))
        work = FragmentWork(ref, PENDING, None, None, inputs_hash, where_hash, waiting)
        if complete[self.name]:
            work.stem = stems[self.name]
            work.status, work.record = _judge(
                records.get(work.stem), self.identity, work, self.base
            )
        elif stems[self.name]:
            work.stem = stems[self.name]  # some of its columns only: recompute it whole
            work.status = STALE
        if waiting and work.status != DONE:
            work.status = DEFERRED
        return work


def _upstream_complete(recs: dict[str, list[Record]], stem: str | None) -> bool:
    got = recs.get(stem or "")
    return not got or any(r.complete for r in got)  # no record: computed before records existed


def _judge(recs: list[Record] | None, identity: str | None, w: FragmentWork, base: str | None):
    if not recs:  # computed under the columns' own identity (or before identities existed)
        if identity is not None and base is not None and base != identity:
            return STALE, None
        return DONE, None
    same = [
        r
        for r in recs
        if (identity is None or r.identity == identity) and r.inputs_hash == w.inputs_hash
    ]
    if not same:
        return STALE, None
    for r in same:
        if r.complete and r.where_hash == w.where_hash:
            return DONE, r
    return PARTIAL, same[-1]  # partial, or complete under an older eligibility: the rest is due


def compaction_blockers(store: Store) -> list[str]:
    """`table.stage`s with partial fragments. Compaction rewrites data files and records are keyed
    by data file, so a partial fragment would then read as done: `sila compact` should refuse
    while this is non-empty (finish them with `sila run <stage>` first). Complete records only
    lose detail (a compacted fragment reads as computed under its columns' identity)."""
    out: set[str] = set()
    for e in store.list("state"):
        rec = _parse(e.key)
        if rec is not None and not rec.complete:
            parts = e.key.split("/")
            out.add(f"{parts[1]}.{parts[2]}" if len(parts) > 3 else e.key)
    return sorted(out)
