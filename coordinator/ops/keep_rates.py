"""Keep rates of the decision stages (`<stage>_keep` columns) for `sila status`.

A decision column is a bool `<stage>_keep` owned by `<stage>`; null means undetermined (or not
yet computed). Three `count_rows` filters per decision: a scan of one bool column.
"""

from __future__ import annotations

from sila.schema import owner


def keep_rates(ds) -> dict[str, dict]:
    """{stage: {kept, rejected, undetermined, keep_rate}} for each decision stage of `ds`."""
    import pyarrow as pa

    out: dict[str, dict] = {}
    for f in ds.schema:
        stage = owner(f)
        if not stage or f.name != f"{stage}_keep" or f.type != pa.bool_():
            continue
        kept = ds.count_rows(filter=f"{f.name} = true")
        rejected = ds.count_rows(filter=f"{f.name} = false")
        decided = kept + rejected
        out[stage] = {
            "kept": kept,
            "rejected": rejected,
            "undetermined": ds.count_rows() - decided,
            "keep_rate": round(kept / decided, 4) if decided else None,
        }
    return out


def keep_rate_lines(table_status: dict) -> list[str]:
    """Human lines for `sila status`: one per decision stage of a table."""
    lines = []
    for stage, d in table_status.get("stages", {}).items():
        k = d.get("keep")
        if not k:
            continue
        rate = "-" if k["keep_rate"] is None else f"{k['keep_rate']:.0%}"
        lines.append(
            f"  {stage}: keeps {rate} ({k['kept']} kept, {k['rejected']} rejected, "
            f"{k['undetermined']} undetermined)"
        )
    return lines
