"""`@sila.stage`: the short form for a stage that is one batch function.

    @sila.stage(table="clips", inputs=["thumbnail"], outputs={"sharpness": pa.float32()})
    def sharpness(batch):
        return [laplacian_var(j) for j in batch["thumbnail"].to_pylist()]

The result is an ordinary Stage subclass named after the function; nothing else in the platform
knows it was a function. With one output the function may return just that column's values.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from sila.stage import Resources, Stage


def stage(
    *,
    table: str = "clips",
    inputs: Sequence[str] = (),
    outputs: Mapping[str, pa.DataType] | Sequence[pa.Field],
    where: str | None = None,
    name: str | None = None,
    version: str | None = None,
    resources: Resources | None = None,
    segment_rows: int = 256,
    model: str | None = None,
) -> Callable[[Callable], type[Stage]]:
    """Turn `fn(batch: pa.RecordBatch) -> dict | values` into a Stage class."""
    fields = (
        [pa.field(k, v) for k, v in outputs.items()]
        if isinstance(outputs, Mapping)
        else list(outputs)
    )

    def wrap(fn: Callable[[pa.RecordBatch], Any]) -> type[Stage]:
        single = fields[0].name if len(fields) == 1 else None

        def compute(self, batch: pa.RecordBatch):
            out = fn(batch)
            if single and not isinstance(out, Mapping | pa.RecordBatch | pa.Table):
                return {single: out}
            return out

        try:
            source = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError):
            source = fn.__qualname__
        attrs = {
            "name": name or fn.__name__,
            "table": table,
            "inputs": list(inputs),
            "outputs": fields,
            "where": where,
            "version": version,
            "model": model,
            "segment_rows": segment_rows,
            "compute": compute,
            "fn": staticmethod(fn),
            "__doc__": fn.__doc__,
            "__module__": fn.__module__,
            "__qualname__": fn.__qualname__,
            "__sila_source__": source,
        }
        if resources is not None:
            attrs["compute_resources"] = resources
        cls = type(fn.__name__, (Stage,), attrs)
        cls.validate_declaration()
        return cls

    return wrap
