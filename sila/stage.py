"""The Stage contract: a stage declares the columns it reads and the typed columns it writes.

A stage never touches leases, Ray or Lance commits; the coordinator owns all of that.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import textwrap
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from sila.errors import ContractError, MediaError, RowError


@dataclass(frozen=True)
class Resources:
    """What one worker of a step needs (mapped to Ray actor options by the Ray executor)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None
    workers: int | None = None  # None: sized to the cluster by the executor


@dataclass(frozen=True)
class Lookup:
    """Columns of another table a stage reads, joined to each row by a declared key.

    ``Lookup("sources", ("embodiment", "traj_ee_left"), key="source_id")`` gives every row of
    the stage's table the columns of the `sources` row whose ``on`` column ("id") equals the
    row's ``key`` column. The platform supplies them per segment, read from the table version
    the job pinned and refreshed when new fragments appear; a stage never opens the table.
    The columns arrive in the batch as ``<table>.<column>`` (e.g. ``sources.embodiment``).
    """

    table: str
    columns: tuple[str, ...]
    key: str
    on: str = "id"

    def names(self) -> list[str]:
        """The batch column names this lookup adds: ``<table>.<column>``."""
        return [f"{self.table}.{c}" for c in self.columns]


@dataclass(frozen=True)
class ErrorPolicy:
    """How the per-row loop judges an exception raised for one row.

    - ``row_errors``: the row's answer is its error (``<stage>_error``), the job goes on;
    - ``transient``: retried ``retries`` times with ``backoff_s`` (doubling), then a row error;
    - anything else propagates: the platform judges it as a crash of the stage.
    """

    row_errors: tuple[type[BaseException], ...] = (RowError, MediaError)
    transient: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)
    retries: int = 2
    backoff_s: float = 0.2


@dataclass(frozen=True)
class Emit:
    """What an *explode* stage returns: outputs for its own rows plus child rows.

    `children` rows go to the stage's `child_table` (appended idempotently by `id`).
    """

    outputs: Any
    children: pa.Table


@dataclass
class StageContext:
    """Handed to `Stage.setup`: where the stage runs and what it may use."""

    lake_uri: str
    storage_options: dict[str, str] = field(default_factory=dict)
    endpoint_url: str | None = None
    worker_id: str = "inline"
    allow_random_weights: bool = False
    step: str = "all"  # under Ray: the step this actor runs ("preprocess", "compute", ...)
    # Supplied by the platform from the table version the job pinned (a stage never opens a
    # table): every stage's column facts on this table (`sila.*` field metadata, by stage name),
    # and for a global stage the fit it assigns against.
    facts: dict[str, dict[str, str]] = field(default_factory=dict)
    fit: Any = None
    device: str = "cpu"  # "cuda" where the step was given a GPU (or inline with CUDA present)


class Stage:
    """Base class of every stage, built-in or user-defined.

    Example::

        class Sharpness(Stage):
            name = "sharpness"
            table = "sources"
            inputs = ["thumbnail"]
            outputs = [pa.field("sharpness", pa.float32())]

            def process_row(self, row):
                return {"sharpness": laplacian_var(row["thumbnail"])}

    The per-row hook `process_row` is the usual form: the base class loops, records `RowError` /
    `MediaError` as `<name>_error`, retries transient errors and counts. Reads beyond the row
    are declared (`lookups`, `gate()`, the global kind), never done in `setup()`.
    `preprocess` (CPU), `compute` (accelerator or endpoint) and `postprocess` (CPU) run in
    order on one segment of rows; the last one returns the declared `outputs` for the same
    rows in the same order, as a RecordBatch, a Table or a mapping of column -> values. A
    column named `<name>_error` (str or None per row) may be returned to mark row errors;
    raising `RowError` from a batch call isolates the failing rows one by one.
    Blob inputs (media) arrive as local file paths (str).
    """

    name: ClassVar[str] = ""
    table: ClassVar[str] = "clips"
    inputs: ClassVar[list[str]] = []
    outputs: ClassVar[list[pa.Field]] = []
    # Rows the stage computes (SQL); others get nulls. The platform binds a job's gate onto the
    # instance (`stage.where`), never onto the class.
    where: str | None = None
    version: ClassVar[str | None] = None  # None: a hash of the class's source code
    model: ClassVar[str | None] = None
    kind: ClassVar[str] = "enrich"  # "enrich" | "explode"
    child_table: ClassVar[str | None] = None
    child_fields: ClassVar[list[pa.Field]] = []  # explode: schema of the child rows (needs "id")
    segment_rows: ClassVar[int] = 256
    preprocess_resources: ClassVar[Resources] = Resources(cpus=1)
    compute_resources: ClassVar[Resources] = Resources(cpus=1)
    postprocess_resources: ClassVar[Resources] = Resources(cpus=1)
    settings: ClassVar[dict[str, Any]] = {}  # defaults; the recipe and CLI override them
    # A node-local model server (sila.endpoints.serve.EndpointSpec, e.g. `vllm serve`):
    # started once per node; `setup(ctx)` finds its URL in ctx.endpoint_url.
    endpoint: ClassVar[Any] = None
    # -- declared reads beyond the own row's `inputs` ------------------------------------------
    lookups: ClassVar[list[Lookup]] = []  # columns of other tables joined by a declared key
    is_global: ClassVar[bool] = False  # needs the whole table: fit once, then assign per fragment
    fit_reads: ClassVar[list[str]] = []  # columns a global stage's fit reads besides `inputs`
    # -- explode stages: how children are keyed, kept and packed -------------------------------
    child_parent_key: ClassVar[str] = "source_id"  # child column naming its parent row's id
    child_mutable_fields: ClassVar[list[str]] = []  # child columns a re-run may rewrite in place
    child_rows_per_fragment: ClassVar[int] = 64  # new children per fragment (bounds a worker)
    # -- execution ------------------------------------------------------------------------------
    setup_steps: ClassVar[tuple[str, ...]] = ("compute",)  # Ray pools whose actors run setup()
    error_policy: ClassVar[ErrorPolicy] = ErrorPolicy()

    def __init__(self, **overrides: Any) -> None:
        unknown = set(overrides) - set(self.settings)
        if unknown:
            raise ContractError(
                f"stage '{self.name}' has no setting(s) {sorted(unknown)}; "
                f"known settings: {sorted(self.settings) or 'none'}"
            )
        self.config: dict[str, Any] = {**self.settings, **overrides}

    # -- the three steps; override what the stage needs ------------------------------------
    def setup(self, ctx: StageContext) -> None:
        """Load models or connect to endpoints: once per worker, before any batch."""

    def preprocess(self, batch: pa.RecordBatch) -> Any:
        return batch

    def compute(self, prepared: Any) -> Any:
        """Accelerator or endpoint work on one segment. By default: `process_row` over every
        row when the stage defines it, else the prepared batch unchanged."""
        if type(self).process_row is Stage.process_row:
            return prepared
        return self.map_rows(prepared)

    def process_row(self, row: dict[str, Any]) -> Mapping[str, Any]:
        """The per-row hook: one input row (column -> value) in, its outputs (column -> value;
        a missing column is null) out. Raise ``RowError`` for a row whose answer is an error.
        The base class owns the loop, error capture, retries, timing and counters."""
        raise NotImplementedError

    def map_rows(self, batch: Any) -> dict[str, list]:
        """Run `process_row` over `batch` (a RecordBatch, Table or list of row dicts) under the
        stage's `error_policy`; returns every output column plus `<name>_error`."""
        rows = batch.to_pylist() if hasattr(batch, "to_pylist") else list(batch)
        names = [f.name for f in self.outputs]
        out: dict[str, list] = {n: [] for n in names}
        errors: list[str | None] = []
        for row in rows:
            t0 = time.perf_counter()
            try:
                values, err = self._row_with_retries(row), None
            except self.error_policy.row_errors as e:
                values, err = {}, self.row_error_message(e, row)
                self.counters["row_errors"] += 1
            for n in names:
                out[n].append(values.get(n))
            errors.append(err)
            self.counters["rows"] += 1
            self.counters["row_ms"] += int((time.perf_counter() - t0) * 1000)
        out[self.error_column()] = errors
        return out

    def _row_with_retries(self, row: dict[str, Any]) -> Mapping[str, Any]:
        policy = self.error_policy
        for attempt in range(policy.retries + 1):
            try:
                return self.process_row(row) or {}
            except policy.transient as e:
                if attempt == policy.retries:
                    raise RowError(f"{type(e).__name__}: {e} (after {attempt + 1} tries)") from e
                self.counters["retries"] += 1
                time.sleep(policy.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def row_error_message(self, exc: BaseException, row: dict[str, Any]) -> str:
        """A row's error as the user reads it: their own path (``uri``) and the source id,
        never the scratch copy of a blob the stage was handed."""
        from sila.media.errors import user_message

        path = next((row[c] for c in ("media", "video") if isinstance(row.get(c), str)), None)
        if path is None and not row.get("uri"):
            return str(exc)
        sid = row.get("source_id") or row.get("id")
        return user_message(exc, path, sid, row.get("uri"))  # type: ignore[arg-type]

    @property
    def counters(self) -> Counter:
        """Per-instance counters of the per-row loop: rows, row_errors, retries, row_ms."""
        c = self.__dict__.get("_counters")
        if c is None:
            c = self.__dict__["_counters"] = Counter()
        return c

    def postprocess(self, computed: Any) -> Any:
        return computed

    # -- derived facts the platform uses -------------------------------------------------------
    @classmethod
    def error_column(cls) -> str:
        return f"{cls.name}_error"

    @classmethod
    def output_fields(cls) -> list[pa.Field]:
        """Declared outputs plus the stage's error column."""
        return [*cls.outputs, pa.field(cls.error_column(), pa.string())]

    @classmethod
    def resolved_version(cls) -> str:
        return cls.version if cls.version is not None else code_version(cls)

    @classmethod
    def version_is_explicit(cls) -> bool:
        return cls.version is not None

    # -- declared facts the platform reads (instance level: they may follow settings) -----------
    def input_columns(self) -> list[str]:
        """Columns of the stage's own table it reads: `inputs`, plus any a setting names (e.g.
        assign_split's group column). The platform reads exactly these, and orders by them."""
        return list(self.inputs)

    def gate(self) -> str | list[str] | None:
        """Decision columns a row must pass before it is computed: "auto" (every `<stage>_keep`
        decision of the table), a list of columns, or None. Gated stages run after the stages
        that write those decisions, and rows a decision rejected are never computed."""
        return None

    def model_calls_per_row(self) -> int:
        """First-attempt model (endpoint) calls per computed row; 0 for a stage that makes none.
        `sila run --dry-run` multiplies it by the rows it would compute."""
        return 0

    def endpoint_urls(self) -> list[str]:
        """Servers already running that the stage uses (in failover order). When it is not
        empty the platform starts no node-local `endpoint` of its own."""
        return []

    def column_facts(self) -> dict[str, str]:
        """Facts `setup` learned (the model really loaded, random weights, the fit id), as
        `sila.*` keys. The platform writes them into the stage's column metadata after setup
        and keeps them out of class state; a change of a fact makes computed values stale
        through `model_identity`."""
        return {}

    def identity_settings(self) -> dict[str, Any]:
        """The settings that change what the stage computes (part of `work_identity`). Override
        to leave out operational ones (timeouts, concurrency, keys) so they never make values
        stale."""
        return dict(self.config)

    def work_identity(self) -> str:
        """What makes two computations of this stage the same work: version, effective settings
        and model. Recorded per fragment and in checkpoints: values computed under another
        identity are stale, never mixed with these."""
        raw = json.dumps(
            {
                "version": self.resolved_version(),
                "settings": self.identity_settings(),
                "model": self.model_identity(),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:10]

    def model_identity(self) -> str | None:
        """The model the stage computes with (override when settings alone do not name it, e.g.
        weights resolved from a cache)."""
        return self.model

    @classmethod
    def validate_declaration(cls) -> None:
        """Checks that need no table: names, types, kinds."""
        where = f"stage class {cls.__module__}.{cls.__qualname__}"
        if not cls.name or not cls.name.isidentifier():
            raise ContractError(f"{where}: `name` must be a non-empty identifier, got {cls.name!r}")
        if not cls.outputs:
            raise ContractError(f"stage '{cls.name}': declare at least one output field")
        names = [f.name for f in cls.output_fields()]
        if len(set(names)) != len(names):
            raise ContractError(f"stage '{cls.name}': duplicate output names {names}")
        for f in cls.outputs:
            if not isinstance(f, pa.Field):
                raise ContractError(
                    f"stage '{cls.name}': outputs must be pyarrow fields, got {f!r}; "
                    "write pa.field('score', pa.float32())"
                )
            if f.name in cls.inputs:
                raise ContractError(
                    f"stage '{cls.name}': column '{f.name}' is both input and output"
                )
        dotted = [c for c in cls.inputs if "." in c]
        if dotted:
            raise ContractError(
                f"stage '{cls.name}': input(s) {dotted} read another table; declare a Lookup "
                'with its join key instead, e.g. lookups = [Lookup("sources", ("media",), '
                'key="source_id")]'
            )
        if cls.kind not in ("enrich", "explode"):
            raise ContractError(f"stage '{cls.name}': kind must be 'enrich' or 'explode'")
        if cls.kind == "explode" and not cls.child_table:
            raise ContractError(f"stage '{cls.name}': an explode stage must set child_table")
        if cls.kind == "explode" and "id" not in [f.name for f in cls.child_fields]:
            raise ContractError(
                f"stage '{cls.name}': child_fields must include an 'id' string field"
            )
        if cls.segment_rows < 1:
            raise ContractError(f"stage '{cls.name}': segment_rows must be >= 1")


def code_version(cls: type) -> str:
    """A short hash of the class's code (or, for `@sila.stage`, the function's), ignoring
    comments, docstrings and formatting."""
    source = getattr(cls, "__sila_source__", "")
    if not source:
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            source = cls.__qualname__
    return "c" + hashlib.sha256(_normalized(source).encode()).hexdigest()[:11]


def _normalized(source: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body.pop(0)
    return ast.dump(tree, annotate_fields=False)
