"""The Stage contract: a stage declares the columns it reads and the typed columns it writes.

A stage never touches leases, Ray or Lance commits; the coordinator owns all of that.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import textwrap
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from sila.errors import ContractError


@dataclass(frozen=True)
class Resources:
    """What one worker of a step needs (mapped to Ray actor options by the Ray executor)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None
    workers: int | None = None  # None: sized to the cluster by the executor


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

    def lake(self):
        """Open the lake (for stages that read another table, e.g. a dedup fit)."""
        from sila.lake import Lake

        return Lake(self.lake_uri, storage_options=self.storage_options)


class Stage:
    """Base class of every stage, built-in or user-defined.

    Example::

        class Sharpness(Stage):
            name = "sharpness"
            table = "sources"
            inputs = ["thumbnail"]
            outputs = [pa.field("sharpness", pa.float32())]

            def compute(self, batch):
                return {"sharpness": [laplacian_var(b) for b in batch["thumbnail"].to_pylist()]}

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
    where: ClassVar[str | None] = None
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
        return prepared

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

    def work_identity(self) -> str:
        """What makes two computations of this stage the same work: version, effective settings
        and model. Recorded per fragment and in checkpoints: values computed under another
        identity are stale, never mixed with these."""
        raw = json.dumps(
            {
                "version": self.resolved_version(),
                "settings": self.config,
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
