"""A decision stage over ingest's own columns, for the what-if tests: rules are thresholds on
`duration_s` and `width`, so a lake needs only an ingest to hold its inputs."""

from __future__ import annotations

from typing import Any

from sila.filters import Crossing, Filter, Verdict


class Length(Filter):
    """Rejects media shorter than `min_duration_s` or narrower than `min_width`."""

    name = "length"
    table = "sources"
    inputs = ["duration_s", "width", "media_kind"]
    logic_version = "1"
    settings: dict[str, Any] = {"min_duration_s": 0.5, "min_width": 0, "reject": ["too_short"]}

    def filter(self, row: dict[str, Any]) -> Verdict:
        if row["duration_s"] is None:
            return Verdict(None, ["no_duration"])
        tags = [c.tag for c in self.crossings(row)]
        reasons = [t for t in tags if t in self.config["reject"]]
        return Verdict(not reasons, reasons)

    def crossings(self, row: dict[str, Any]) -> list[Crossing]:
        out = []
        limit = float(self.config["min_duration_s"])
        if row["duration_s"] is not None and row["duration_s"] < limit:
            out.append(
                Crossing(
                    "too_short", "duration_s", row["duration_s"], limit, "min", "min_duration_s"
                )
            )
        limit = float(self.config["min_width"])
        if row["width"] is not None and row["width"] < limit:
            out.append(Crossing("too_narrow", "width", row["width"], limit, "min", "min_width"))
        return out
