"""Decision stages: read score columns, apply recipe rules, write a keep flag and its reasons.

In the spirit of datatrove's ``BaseFilter.filter(doc) -> keep | (keep, reason)``: a subclass
writes ``filter(row)`` and the base writes ``<name>_keep`` (bool) and ``<name>_reasons``
(list<string>) for every row, so every filter in the lake reads the same way::

    select r, count(*) from clips, unnest(quality_reasons) t(r) group by r

Filters never delete rows. Their rules are the stage's settings (the recipe's
``[stages.<name>]`` section), and the stage's version is derived from those rules: changing a
threshold re-runs the (cheap) decision stage and never the signal stages that feed it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa

from sila.stage import Resources, Stage

REASONS = pa.list_(pa.string())


@dataclass
class Verdict:
    """A filter's full answer for one row.

    ``keep`` None means undetermined (an input the rules need is missing): not a rejection.
    ``reasons`` say why the row is not kept; ``flags`` name minor issues of a kept row;
    ``extra`` fills the stage's ``extra_outputs`` by name.
    """

    keep: bool | None
    reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Crossing(NamedTuple):
    """One threshold rule a row crossed: the tag it gave, the score column, the row's value, the
    rule's limit and setting, and whether the limit is a minimum or a maximum. `sila explain`
    shows a decision's reasons with these (which threshold, by how much)."""

    tag: str
    column: str
    value: float
    limit: float
    kind: str  # "min": tagged below the limit | "max": tagged above it
    setting: str = ""

    @property
    def margin(self) -> float:
        """How far past the limit the value lies (positive, in the column's unit)."""
        return self.limit - self.value if self.kind == "min" else self.value - self.limit


def as_verdict(answer: Any) -> Verdict:
    """Normalise ``keep`` | ``(keep, reason)`` | ``(keep, [reasons])`` | Verdict."""
    if isinstance(answer, Verdict):
        return answer
    if isinstance(answer, tuple):
        keep, why = answer
        reasons = [why] if isinstance(why, str) else list(why or [])
        return Verdict(None if keep is None else bool(keep), reasons)
    return Verdict(None if answer is None else bool(answer))


def rules_digest(rules: Mapping[str, Any]) -> str:
    """A short stable hash of a rule set (key order and int/float spelling do not matter)."""

    def norm(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): norm(x) for k, x in sorted(v.items())}
        if isinstance(v, list | tuple):
            return [norm(x) for x in v]
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int | float):
            return float(v)
        return str(v)

    text = json.dumps(norm(dict(rules)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def logic_part(version: str) -> str:
    """The code part of a version ("1+r<rules digest>" -> "1"); other versions unchanged."""
    return version.split("+r", 1)[0]


class _ClassOrInstance:
    """A method called on the class (`fn(cls, None)`) or on an instance (`fn(cls, self)`)."""

    def __init__(self, fn: Callable[[type, Any], Any]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, cls: type) -> Callable[[], Any]:
        return functools.partial(self.fn, cls, obj)


class SettingsVersion:
    """Mixin for a Stage whose settings change what its columns mean (rules, models).

    The version recorded on the columns (and checkpoints, job records) is ``logic_version`` plus
    a digest of the settings named by ``version_keys`` (None: all of them), as the instance has
    them: a changed threshold or model is a new version, so the platform recomputes the stage's
    rows (and only this stage's). Operational settings (timeouts) stay out of ``version_keys``.
    A pure function of class + settings: asked of the class, it is the default rules' version;
    asked of an instance, its own rules' (building an instance never changes another's).
    """

    logic_version: ClassVar[str] = "1"
    version_keys: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def _rules(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        keys = cls.version_keys if cls.version_keys is not None else tuple(config)
        return {k: config.get(k) for k in keys}

    @classmethod
    def rules_version(cls, rules: Mapping[str, Any]) -> str:
        """The version of the stage under `rules` (settings over the defaults)."""
        return f"{cls.logic_version}+r{rules_digest(cls._rules({**cls.settings, **rules}))}"

    @_ClassOrInstance
    def resolved_version(cls, self: Any = None) -> str:  # noqa: N805 - see _ClassOrInstance
        """The rules version of this instance's settings (of the defaults, asked of the class)."""
        return cls.rules_version(self.config if self is not None else cls.settings)

    @classmethod
    def version_is_explicit(cls) -> bool:
        return True  # a new version is a new rule set: recompute, no --recompute needed


class Filter(SettingsVersion, Stage):
    """Base of decision stages: implement ``filter(row) -> keep | (keep, reason) | Verdict``.

    Class attributes: ``name``, ``table``, ``inputs`` (the score columns ``row`` holds),
    ``settings`` (the default rules), ``logic_version`` (bump when ``filter`` changes meaning),
    ``flags`` (also write ``<name>_flags``), ``extra_outputs`` (more decision columns).
    """

    flags: ClassVar[bool] = False
    extra_outputs: ClassVar[list[pa.Field]] = []
    segment_rows = 4096  # a decision is arithmetic over a few columns: big segments
    compute_resources = Resources(cpus=1)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name and "outputs" not in cls.__dict__:
            cls.outputs = [
                pa.field(f"{cls.name}_keep", pa.bool_()),
                pa.field(f"{cls.name}_reasons", REASONS),
                *([pa.field(f"{cls.name}_flags", REASONS)] if cls.flags else []),
                *cls.extra_outputs,
            ]

    def filter(self, row: dict[str, Any]) -> Any:
        raise NotImplementedError

    def keep_column(self, table: pa.Table) -> list[bool | None] | None:
        """Every row's keep decision at once (vectorised over `table`'s input columns), exactly
        as `filter` decides it row by row; None when the filter offers no vectorised form.
        `sila whatif` uses it to judge many rows fast, and `filter` for the rows it lists."""
        return None

    def crossings(self, row: dict[str, Any]) -> list[Crossing]:
        """The threshold rules `row` crosses under this instance's rules (for explanations; a
        filter whose rules are not thresholds returns none)."""
        return []

    def compute(self, batch: pa.RecordBatch) -> dict[str, list]:
        out: dict[str, list] = {f.name: [] for f in self.output_fields()}
        keep, reasons = f"{self.name}_keep", f"{self.name}_reasons"
        for row in batch.to_pylist():
            v = as_verdict(self.filter(row))
            out[keep].append(v.keep)
            out[reasons].append(list(v.reasons))
            if self.flags:
                out[f"{self.name}_flags"].append(list(v.flags))
            for f in self.extra_outputs:
                out[f.name].append(v.extra.get(f.name))
            out[self.error_column()].append(None)
        return out
