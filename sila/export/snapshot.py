"""`sila snapshot OUT --format parquet`: Parquet projections of the lake's tables for Spark,
Databricks or any engine. Streamed batch by batch; blob columns are left out unless asked."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from sila.errors import SilaError
from sila.schema import is_blob


def snapshot(
    lake,
    out: str,
    *,
    tables: list[str] | None = None,
    columns: list[str] | None = None,
    where: str | None = None,
    blobs: bool = False,
    fmt: str = "parquet",
) -> dict:
    if fmt != "parquet":
        raise SilaError(f"snapshot format '{fmt}' is not supported (parquet)")
    os.makedirs(out, exist_ok=True)
    result = {}
    for name in tables or lake.tables():
        ds = lake.table(name)
        cols = [f.name for f in ds.schema if blobs or not is_blob(f)]
        if columns:
            missing = [c for c in columns if c not in ds.schema.names]
            if missing and tables:
                raise SilaError(f"{name} has no column(s) {missing}")
            cols = [c for c in columns if c in ds.schema.names]
        if not cols:
            continue
        try:
            scanner = ds.scanner(columns=cols, filter=where)
            schema = pa.schema([_plain(ds.schema.field(c)) for c in cols])
        except (ValueError, OSError, RuntimeError) as e:
            if not tables:
                continue  # the where names columns this table lacks: skip it
            raise SilaError(f"snapshot of {name} failed: {e}") from e
        path = os.path.join(out, f"{name}.parquet")
        rows = 0
        with pq.ParquetWriter(path + ".tmp", schema, compression="zstd") as w:
            for batch in scanner.to_batches():
                w.write_batch(
                    pa.RecordBatch.from_arrays(
                        [batch.column(c).cast(schema.field(c).type) for c in cols], schema=schema
                    )
                )
                rows += batch.num_rows
        os.replace(path + ".tmp", path)
        result[name] = {"path": path, "rows": rows, "columns": cols, "version": ds.version}
    return result


def _plain(f: pa.Field) -> pa.Field:
    return pa.field(
        f.name,
        f.type,
        f.nullable,
        metadata={
            k: v for k, v in (f.metadata or {}).items() if not k.startswith(b"lance-encoding")
        },
    )
