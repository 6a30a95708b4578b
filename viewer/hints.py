"""What to run when something the viewer wants is missing: the stage that writes a column.

The registry (entry points, so also third-party stages) is asked first; stages that may not be
installed yet fall back to the names the pipeline uses for them.
"""

from __future__ import annotations

import functools

# column (or prefix) -> stage, for stages that may not be registered in this install
FALLBACK = {
    "thumbnail": "thumbnail",
    "video": "transcode",
    "embedding": "embed",
    "dedup_": "dedup",
    "quality_": "quality",
    "caption": "caption",
    "aesthetic": "quality",
    "audio_": "audio",
    "action": "actions",
}
TABLES = {"sources": None, "clips": "split"}


@functools.cache
def _producers() -> dict[str, tuple[str, str]]:
    """column or table name -> (stage, table it runs on), from the registered stages."""
    out: dict[str, tuple[str, str]] = {}
    try:
        from sila.registry import registered

        stages = registered()
    except Exception:  # noqa: BLE001 - a hint must never break a page
        return out
    for name, info in stages.items():
        cls = info.cls
        if cls is None:
            continue
        for f in cls.output_fields():
            out.setdefault(f.name, (name, cls.table))
        child = getattr(cls, "child_table", None)
        if child:
            out.setdefault(f"table:{child}", (name, cls.table))
    return out


def producer(column: str, table: str | None = None) -> str | None:
    """Name of the stage that writes `column` (or creates `table` when `column` is None)."""
    key = f"table:{table}" if column is None else column
    hit = _producers().get(key)
    if hit:
        return hit[0]
    if column is None:
        return TABLES.get(table or "")
    for prefix, stage in FALLBACK.items():
        if column == prefix or (prefix.endswith("_") and column.startswith(prefix)):
            return stage
    return None


def command_for(column: str | None, table: str | None, lake: str) -> str:
    """e.g. "sila run embed --lake /data/lake" (or how to make the table)."""
    if column is None and table == "sources":
        return f"sila ingest PATH --lake {lake}"
    stage = producer(column, table)
    if stage is None:
        return f"run the stage that writes '{column}' (see `sila stages`)"
    return f"sila run {stage} --lake {lake}"
