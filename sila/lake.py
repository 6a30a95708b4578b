"""The lake: a directory or object-store URI holding one Lance table per entity.

lake = sila.Lake("./lake")
lake.ingest(["videos/"])
lake.run("thumbnail")
lake.sql("select media_kind, count(*) from sources group by 1")
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import lance
import pyarrow as pa

from sila.coordinator.store import (
    Store,
    ensure_local_dir,
    env_storage_options,
    is_remote,
    local_path,
)
from sila.errors import LakeError

LANCE_SUFFIX = ".lance"
MAX_SESSIONS = 8  # lakes whose caches a process keeps (a process usually works on one)

_sessions: OrderedDict[str, lance.Session] = OrderedDict()
_sessions_lock = threading.Lock()


def lake_session(uri: str) -> lance.Session:
    """The one Lance session of the lake at `uri` in this process: every open of its tables
    shares its caches (manifests, file metadata, indexes), so the ~dozens of opens of one run
    read each immutable object once. Several `Lake` objects for one URI share it."""
    with _sessions_lock:
        session = _sessions.get(uri)
        if session is None:
            session = _sessions[uri] = lance.Session()
            while len(_sessions) > MAX_SESSIONS:
                _sessions.popitem(last=False)
        _sessions.move_to_end(uri)
        return session


def default_lake_uri() -> str:
    return os.environ.get("SILA_LAKE", "./lake")


class Lake:
    """A SILA lake. Opening never writes; `init()` or the first ingest creates it."""

    def __init__(
        self, uri: str | os.PathLike | None = None, *, storage_options: dict[str, str] | None = None
    ):
        uri = str(uri) if uri is not None else default_lake_uri()
        if not is_remote(uri):
            uri = os.path.abspath(local_path(uri))
        self.uri = uri.rstrip("/")
        from sila.recipe import load_recipe  # $SILA_RECIPE's [storage] section, if any

        recipe_opts = {k: str(v) for k, v in load_recipe(None).get("storage", {}).items()}
        self.storage_options = {
            **env_storage_options(self.uri),
            **recipe_opts,
            **(storage_options or {}),
        }
        self._store: Store | None = None

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    # -- tables -------------------------------------------------------------------------------
    def init(self) -> Lake:
        ensure_local_dir(self.uri)
        _ = self.store  # creates _sila/
        return self

    @property
    def session(self) -> lance.Session:
        """The Lance session every open of this lake's tables shares (`lake_session`)."""
        return lake_session(self.uri)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.uri, self.storage_options)
        return self._store

    def table_uri(self, name: str) -> str:
        return f"{self.uri}/{name}{LANCE_SUFFIX}"

    def tables(self) -> list[str]:
        """Names of the tables in the lake, e.g. ['clips', 'sources']."""
        if is_remote(self.uri):
            names = self.store.lake_dirs()
        else:
            if not os.path.isdir(self.uri):
                return []
            # a table exists once its first version is committed: a create killed before that
            # leaves a folder with data files and no version, which the next create replaces
            names = [
                n
                for n in os.listdir(self.uri)
                if os.path.isdir(v := os.path.join(self.uri, n, "_versions")) and os.listdir(v)
            ]
        return sorted(n[: -len(LANCE_SUFFIX)] for n in names if n.endswith(LANCE_SUFFIX))

    def has_table(self, name: str) -> bool:
        return name in self.tables()

    def table(self, name: str, version: int | None = None) -> lance.LanceDataset:
        """The Lance dataset of a table (fresh: the latest committed version)."""
        try:
            return lance.dataset(
                self.table_uri(name),
                version=version,
                storage_options=self.storage_options or None,
                session=self.session,
            )
        except (ValueError, OSError, RuntimeError) as e:
            if not self.has_table(name):
                have = ", ".join(self.tables()) or "none"
                hint = (
                    "run `sila ingest PATH` first"
                    if name == "sources"
                    else "run the stage that creates it"
                )
                raise LakeError(
                    f"lake {self.uri} has no table '{name}' (tables: {have}); {hint}"
                ) from e
            raise LakeError(f"cannot open table '{name}' at {self.table_uri(name)}: {e}") from e

    def create_table(self, name: str, data: pa.Table | pa.Schema) -> lance.LanceDataset:
        ensure_local_dir(self.uri)
        tbl = data if isinstance(data, pa.Table) else data.empty_table()
        return lance.write_dataset(
            tbl,
            self.table_uri(name),
            mode="create",
            storage_options=self.storage_options or None,
            session=self.session,
        )

    # -- the public verbs (same code path as the CLI) -------------------------------------------
    def ingest(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        reference: bool = False,
        progress: bool = False,
        **options: Any,
    ):
        """Add media files, directories, globs or JSONL/CSV manifests to `sources`.

        `options`: rows_per_fragment (64), bytes_per_fragment (2 GiB), allow_outside (False).
        Returns an IngestReport (added / already present / failed / missing / skipped)."""
        from sila.episodes.ingest import ingest_with_episodes

        return ingest_with_episodes(
            self, [os.fspath(p) for p in paths], reference=reference, progress=progress, **options
        )

    def run(self, stage: Any, options: Any = None, **overrides: Any) -> dict[str, Any]:
        """Run a stage (class, instance, registered name or 'file.py:Class') over its due rows.

        `options`: a `sila.coordinator.options.RunOptions`; keyword overrides name its fields:
        executor ("auto": Ray when `address`/RAY_ADDRESS names a cluster, worker processes for
        workers > 1, else in this process; "inline", "processes", "ray"), workers, where,
        recompute, retry_errors, settings, recipe, progress, address, segment_rows, ttl, ...
        Returns the job record (state, counts, errors). Example::

            job = lake.run("thumbnail", where="media_kind = 'video'")
            assert job["state"] == "succeeded"
        """
        from sila.coordinator.run import run_stage

        return run_stage(self, stage, options, **overrides)

    def export(
        self,
        out: str,
        *,
        where: str | None = None,
        mixture: str | None = None,
        label: str | None = None,
        progress=None,
        options=None,
        **kw: Any,
    ) -> dict[str, Any]:
        """Selected clips as bucketed WebDataset shards under `out` (see `sila export wds`).

        `mixture`: a recipe with a [mixture] (one shard set per subset plus the blend).
        Returns the manifest (per bucket: shards, samples, bytes; pinned table versions)."""
        import json as _json

        from sila.export.wds import ExportOptions, Out, run_export

        opts = options or ExportOptions(out=out, where=where, **kw)
        if mixture:
            from sila.export.mixture import export_mixture

            return export_mixture(self, mixture, opts, progress=progress)
        man = run_export(self, opts, progress=progress)
        if "split" in self.table(opts.table).schema.names:
            from sila.export.splits_audit import leakage_audit

            man["audit"] = leakage_audit(self, opts.table, label=label, where=man["selection"])
            Out(opts.out, opts.storage_options or self.storage_options).put(
                "leakage_audit.json", _json.dumps(man["audit"], indent=1, sort_keys=True).encode()
            )
        return man

    def devtable(self, to: str, rows: int, **options: Any) -> dict[str, Any]:
        """A small lake at `to` with the same schemas and a stratified sample of rows."""
        from sila.export.devtable import make_devtable

        return make_devtable(
            self, Lake(to, storage_options=self.storage_options).init(), rows, **options
        )

    def snapshot(self, out: str, **options: Any) -> dict[str, Any]:
        """Parquet projections of the tables (see `sila snapshot`)."""
        from sila.export.snapshot import snapshot

        return snapshot(self, out, **options)

    def card(self, out: str, **options: Any) -> dict[str, Any]:
        """A dataset card (Markdown, PNG plots, Croissant JSON-LD) under `out`."""
        from sila.export.card import write_card

        return write_card(self, out, **options)

    def pipeline(self, recipe: str, **options: Any) -> dict[str, Any]:
        """Run every stage of a recipe in dependency order (see `sila pipeline run`).

        Options: `only`, `until`, `concurrent`, and any `run` option (workers, executor...)."""
        from sila.coordinator.ops.pipeline import run_pipeline

        return run_pipeline(self, recipe, **options)

    def doctor(self, **options: Any) -> dict[str, Any]:
        """Findings that need a person or an agent, each with the command that fixes it."""
        from sila.coordinator.ops.doctor import diagnose

        return diagnose(self, **options)

    def jobs(self, stage: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Job records, oldest first."""
        from sila.coordinator.ops.housekeeping import job_records

        return job_records(self, limit, stage)

    def status(self) -> dict[str, Any]:
        """Per table: rows, fragments and per stage done/pending fragments, errors, staleness."""
        from sila.coordinator.ops.status import lake_status

        return lake_status(self)

    def search(self, text: str | None = None, **kwargs: Any):
        """Nearest clips to a text, `like="<clip id>"`, `image="file.jpg"` or `vector=`; with
        `k=`, `where=` (SQL prefilter), `columns=`. Returns a SearchResult (`.results`,
        `.exact`, `.random_weights`, `.notes`). Example::

            lake.search("a robot arm picking a cup", k=5, where="dedup_keep")
        """
        from sila.retrieval.search import search

        return search(self, text, **kwargs)

    def sql(self, query: str) -> pa.Table:
        """Run DuckDB SQL over the lake's tables, visible by name. Returns Arrow."""
        import duckdb

        from sila.schema import is_blob

        con = duckdb.connect()
        for name in self.tables():
            ds = self.table(name)
            # Blob columns reach DuckDB as Lance descriptors that do not match their declared
            # type, so a table is a view without them (`select *` works; read media via Lance).
            keep = [f.name for f in ds.schema if not is_blob(f)]
            if len(keep) == len(ds.schema):
                con.register(name, ds)
            else:
                con.register(f"__sila_{name}", ds)
                cols = ", ".join('"' + c.replace('"', '""') + '"' for c in keep)
                con.execute(f'create view "{name}" as select {cols} from "__sila_{name}"')
        try:
            return con.sql(query).to_arrow_table()
        except duckdb.Error as e:
            if "Substrait" not in str(e) and "Not supported" not in str(e):
                raise LakeError(f"SQL failed: {e}") from e
        # Lance cannot take some filters DuckDB pushes into its scan (e.g. beside a list<uint64>
        # column): filter after the scan instead.
        con.execute("SET disabled_optimizers = 'filter_pushdown'")
        try:
            return con.sql(query).to_arrow_table()
        except duckdb.Error as e:
            raise LakeError(f"SQL failed: {e}") from e
