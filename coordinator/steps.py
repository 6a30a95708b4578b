"""Call a stage's preprocess -> compute -> postprocess on one segment and hold it to its contract.

Outputs are conformed to the declared types; row failures become `<stage>_error` values and
unexpected ones carry their traceback, for the worker's judgement of a broken stage (watch.py).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from sila.errors import ContractError, RowError, SilaError, StageFailed
from sila.stage import Emit, Stage

log = logging.getLogger(__name__)


@dataclass
class SegmentResult:
    outputs: pa.RecordBatch  # declared outputs + <stage>_error, one row per input row
    children: pa.Table | None = None
    unexpected_failures: int = 0
    # (row index in the segment, traceback) of each unexpected failure: the worker logs them at
    # WARNING with the row's id and source path and writes them to the job's log file
    failures: list[tuple[int, str]] | None = None


def run_steps(stage: Stage, batch: pa.RecordBatch) -> SegmentResult:
    """Run the three steps on `batch`; on an exception, isolate rows one at a time."""
    try:
        return _conform(stage, _call(stage, batch), batch.num_rows)
    except ContractError:
        raise
    except Exception as first:  # noqa: BLE001 - any stage failure is isolated per row below
        if batch.num_rows == 1:
            res = failed_rows(stage, 1, _message(first), unexpected=not isinstance(first, RowError))
            if res.unexpected_failures:
                res.failures = [(0, traceback.format_exc())]
            return res
        log.info(
            "stage %s: batch of %d failed (%s); isolating rows", stage.name, batch.num_rows, first
        )
    parts: list[SegmentResult] = []
    unexpected = 0
    failures: list[tuple[int, str]] = []
    for i in range(batch.num_rows):
        row = batch.slice(i, 1)
        try:
            parts.append(_conform(stage, _call(stage, row), 1))
        except ContractError:
            raise
        except Exception as e:  # noqa: BLE001
            bug = not isinstance(e, RowError)
            unexpected += bug
            if bug:
                failures.append((i, traceback.format_exc()))
            parts.append(failed_rows(stage, 1, _message(e), unexpected=bug))
    # "the stage is broken" is judged by the worker over the job's first rows, not one segment
    children = [p.children for p in parts if p.children is not None and p.children.num_rows]
    return SegmentResult(
        pa.Table.from_batches([p.outputs for p in parts]).combine_chunks().to_batches()[0],
        pa.concat_tables(children) if children else None,
        unexpected,
        failures,
    )


def setup_stage(stage: Stage, ctx) -> None:
    """`stage.setup(ctx)`, its failure made the job's (every executor): the stage's own message,
    and nothing computed. A SilaError (a message that names the fix) passes through as is."""
    try:
        stage.setup(ctx)
    except SilaError:
        raise
    except Exception as e:  # noqa: BLE001 - any setup failure stops the job before any work
        raise StageFailed(
            f"stage '{stage.name}' failed to set up: {type(e).__name__}: {e}. "
            "Nothing was computed or committed."
        ) from e


def _call(stage: Stage, batch: pa.RecordBatch):
    return stage.postprocess(stage.compute(stage.preprocess(batch)))


def _message(e: BaseException) -> str:
    if isinstance(e, RowError):
        return str(e) or "row error"
    return f"{type(e).__name__}: {e}"


def failed_rows(stage, n: int, message: str, *, unexpected: bool) -> SegmentResult:
    """`n` rows of a stage (class or instance) with null outputs and `message` as their error."""
    arrays = [pa.nulls(n, f.type) for f in stage.outputs]
    arrays.append(pa.array([message] * n, pa.string()))
    schema = pa.schema(stage.output_fields())
    return SegmentResult(
        pa.RecordBatch.from_arrays(arrays, schema=schema), None, n if unexpected else 0
    )


def crashed_rows(stage, n: int, message: str) -> SegmentResult:
    """`n` rows whose worker process crashed: errors (retried by `--retry-errors`) that count
    as unexpected, so a stage that crashes on everything is judged broken."""
    res = failed_rows(stage, n, message, unexpected=True)
    res.failures = [(i, message) for i in range(n)]
    return res


def merge_results(stage, parts: list[SegmentResult]) -> SegmentResult:
    """One SegmentResult from consecutive row runs (failure indices shifted to the segment)."""
    failures: list[tuple[int, str]] = []
    at = 0
    for p in parts:
        failures += [(at + i, tb) for i, tb in p.failures or []]
        at += p.outputs.num_rows
    children = [p.children for p in parts if p.children is not None and p.children.num_rows]
    schema = pa.schema(stage.output_fields())
    return SegmentResult(
        pa.Table.from_batches([p.outputs for p in parts], schema=schema)
        .combine_chunks()
        .to_batches()[0],
        pa.concat_tables(children) if children else None,
        sum(p.unexpected_failures for p in parts),
        failures,
    )


def _conform(stage: Stage, result, n: int) -> SegmentResult:
    children = None
    if isinstance(result, Emit):
        children, result = result.children, result.outputs
        if isinstance(children, pa.RecordBatch):
            children = pa.Table.from_batches([children])
        if children is not None and not isinstance(children, pa.Table):
            raise ContractError(f"stage '{stage.name}': Emit.children must be a pyarrow Table")
    elif stage.kind == "explode":
        raise ContractError(
            f"stage '{stage.name}' is an explode stage: return sila.Emit(outputs, children)"
        )
    columns = _columns(stage, result)
    err_name = stage.error_column()
    declared = {f.name for f in stage.outputs}
    missing = declared - set(columns)
    extra = set(columns) - declared - {err_name}
    if missing or extra:
        raise ContractError(
            f"stage '{stage.name}' returned columns {sorted(columns)} but declares outputs "
            f"{sorted(declared)}"
            + (f"; missing {sorted(missing)}" if missing else "")
            + (f"; undeclared {sorted(extra)} (add them to `outputs`)" if extra else "")
        )
    arrays = []
    for f in stage.output_fields():
        values = columns.get(f.name)
        if values is None and f.name == err_name:
            arrays.append(pa.nulls(n, pa.string()))
            continue
        arr = _to_array(stage, f, values)
        if len(arr) != n:
            raise ContractError(
                f"stage '{stage.name}': column '{f.name}' has {len(arr)} values for {n} input rows; "
                "return exactly one value per input row, in input order (use None or a "
                f"'{err_name}' message for rows that failed)"
            )
        arrays.append(arr)
    errors = arrays[-1]
    if errors.null_count < n:  # rows with an error get null outputs
        ok = pc.is_null(errors)
        arrays = [pc.if_else(ok, a, pa.nulls(n, a.type)) for a in arrays[:-1]] + [errors]
    batch = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(stage.output_fields()))
    return SegmentResult(batch, children)


def _columns(stage: Stage, result) -> dict:
    if isinstance(result, pa.RecordBatch | pa.Table):
        return {name: result.column(name) for name in result.schema.names}
    if isinstance(result, Mapping):
        return dict(result)
    raise ContractError(
        f"stage '{stage.name}': postprocess returned {type(result).__name__}; return a pyarrow "
        "RecordBatch/Table or a dict mapping each output column to its values"
    )


def _to_array(stage: Stage, field: pa.Field, values) -> pa.Array:
    try:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if isinstance(values, pa.Array):
            if values.type.equals(field.type):
                return values
            return values.cast(field.type, safe=True)
        if hasattr(values, "tolist") and not isinstance(values, list | tuple):
            values = values.tolist()  # numpy
        return pa.array(list(values), type=field.type)
    except (
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        pa.ArrowNotImplementedError,
        TypeError,
        ValueError,
    ) as e:
        got = values.type if isinstance(values, pa.Array) else type(values).__name__
        raise ContractError(
            f"stage '{stage.name}': output '{field.name}' is declared {field.type} but the stage "
            f"returned values of type {got} that do not convert ({e}); return {field.type} values "
            "or change the declaration"
        ) from e
