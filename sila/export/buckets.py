"""Resolution x aspect x duration buckets, from a recipe's `[buckets]` section.

Export groups samples into shards by these buckets and the viewer's Distributions page draws
the same grid, so both read one definition:

    [buckets]
    short_side = [0, 360, 480, 720, 1080]   # lower edges, pixels of the picture's short side
    duration_s = [0, 2, 5, 10, 30]          # lower edges, seconds
    aspect = ["9:16", "3:4", "1:1", "4:3", "16:9", "21:9"]   # nearest named width:height ratio

Edges are lower bounds: a value belongs to the last edge not above it; values below the first
edge fall into the first bucket.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from sila.errors import SilaError

DEFAULT_SHORT_SIDE = (0, 360, 480, 720, 1080)
DEFAULT_DURATION_S = (0.0, 2.0, 5.0, 10.0, 30.0)
DEFAULT_ASPECT = ("9:16", "3:4", "1:1", "4:3", "16:9", "21:9")


def _ratio(name: str) -> float:
    w, sep, h = str(name).partition(":")
    try:
        value = float(w) / float(h) if sep else float(w)
    except (ValueError, ZeroDivisionError):
        raise SilaError(f"[buckets] aspect {name!r}: expected 'W:H' such as '16:9'") from None
    if not value > 0:
        raise SilaError(f"[buckets] aspect {name!r} must be positive")
    return value


def _edges(key: str, values: Any, default: tuple) -> tuple[float, ...]:
    if values is None:
        return tuple(float(v) for v in default)
    if not isinstance(values, list | tuple) or not values:
        raise SilaError(f"[buckets] {key} must be a non-empty list of numbers, got {values!r}")
    try:
        edges = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise SilaError(f"[buckets] {key} must be numbers, got {values!r}") from None
    if list(edges) != sorted(set(edges)):
        raise SilaError(f"[buckets] {key} must be strictly increasing, got {list(values)}")
    return edges


def _label(edges: tuple[float, ...], i: int, unit: str) -> str:
    if i == len(edges) - 1:
        return f"{edges[i]:g}{unit}+"
    return f"{edges[i]:g}-{edges[i + 1]:g}{unit}"


@dataclass(frozen=True)
class Buckets:
    short_side: tuple[float, ...] = tuple(float(v) for v in DEFAULT_SHORT_SIDE)
    duration_s: tuple[float, ...] = DEFAULT_DURATION_S
    aspect: tuple[str, ...] = DEFAULT_ASPECT
    _ratios: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ratios", tuple(_ratio(a) for a in self.aspect))

    def resolution_labels(self) -> list[str]:
        return [_label(self.short_side, i, "p") for i in range(len(self.short_side))]

    def duration_labels(self) -> list[str]:
        return [_label(self.duration_s, i, "s") for i in range(len(self.duration_s))]

    def resolution(self, width: float | None, height: float | None) -> str | None:
        """Bucket of the short side, e.g. '720-1080p'; None when the size is unknown."""
        if not width or not height:
            return None
        i = max(0, bisect.bisect_right(self.short_side, min(width, height)) - 1)
        return self.resolution_labels()[i]

    def duration(self, seconds: float | None) -> str | None:
        if seconds is None or not math.isfinite(seconds):
            return None
        i = max(0, bisect.bisect_right(self.duration_s, seconds) - 1)
        return self.duration_labels()[i]

    def aspect_of(self, width: float | None, height: float | None) -> str | None:
        """The nearest named ratio (in log space: 2:1 and 1:2 are equally far from 1:1)."""
        if not width or not height:
            return None
        r = math.log(width / height)
        best = min(range(len(self._ratios)), key=lambda i: abs(math.log(self._ratios[i]) - r))
        return self.aspect[best]

    def key(
        self, width: float | None, height: float | None, seconds: float | None
    ) -> tuple[str | None, str | None, str | None]:
        """(resolution, aspect, duration) labels of one sample."""
        return self.resolution(width, height), self.aspect_of(width, height), self.duration(seconds)


def parse_buckets(section: dict[str, Any] | None) -> Buckets:
    """Buckets from a recipe's `[buckets]` table (missing keys take the defaults)."""
    section = dict(section or {})
    unknown = set(section) - {"short_side", "duration_s", "aspect"}
    if unknown:
        raise SilaError(
            f"[buckets] unknown key(s) {sorted(unknown)}; known: short_side, duration_s, aspect"
        )
    aspect = section.get("aspect", DEFAULT_ASPECT)
    if not isinstance(aspect, list | tuple) or not aspect:
        raise SilaError(
            f"[buckets] aspect must be a non-empty list such as ['16:9'], got {aspect!r}"
        )
    return Buckets(
        short_side=_edges("short_side", section.get("short_side"), DEFAULT_SHORT_SIDE),
        duration_s=_edges("duration_s", section.get("duration_s"), DEFAULT_DURATION_S),
        aspect=tuple(str(a) for a in aspect),
    )


def recipe_buckets(recipe: dict[str, Any] | None) -> Buckets:
    """The `[buckets]` of a loaded recipe (see `sila.recipe.load_recipe`), else the defaults."""
    return parse_buckets((recipe or {}).get("buckets"))
