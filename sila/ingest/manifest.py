"""Manifests (JSONL / CSV) for ingest: one line per file, other fields become `meta_<field>`.

A bad line (not JSON, no path, a number as path) is one reported failure naming the manifest and
line number; the rest of the manifest goes in. Field types are inferred here and kept stable
across ingests by `MetaTypes`, which reads the types already in the table.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sila.media import display_path

MANIFEST_SUFFIXES = (".jsonl", ".csv")
PATH_KEYS = ("path", "uri", "file")
META_PREFIX = "meta_"


@dataclass
class ManifestLine:
    """One usable line: the path as written, its line number and its other fields."""

    path: str
    line: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class BadLine:
    line: int | None  # None: the whole manifest is unusable (unreadable, no path column)
    error: str


def meta_column(key: str) -> str:
    """`meta_<field>` with the field name reduced to [a-z0-9_] so SQL can name it unquoted."""
    return META_PREFIX + (re.sub(r"[^0-9a-zA-Z_]+", "_", key).strip("_").lower() or "field")


def read_manifest(path: str) -> tuple[list[ManifestLine], list[BadLine]]:
    """Every line of a manifest, good or bad; never raises for the manifest's contents."""
    try:
        if path.endswith(".jsonl"):
            return _read_jsonl(path)
        return _read_csv(path)
    except OSError as e:
        return [], [BadLine(None, f"cannot read manifest: {e.strerror or e}")]


def _path_of(row: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(path, key it came from, error)."""
    for key in PATH_KEYS:
        if key in row:
            value = row[key]
            if not isinstance(value, str):
                got = "null" if value is None else f"{type(value).__name__} {value!r}"
                return None, key, f"'{key}' must be a string, got {got}"
            if not value.strip():
                return None, key, f"'{key}' is empty"
            return value, key, None
    return None, None, f"no 'path' field (nor {', '.join(repr(k) for k in PATH_KEYS[1:])})"


def _read_jsonl(path: str) -> tuple[list[ManifestLine], list[BadLine]]:
    good: list[ManifestLine] = []
    bad: list[BadLine] = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark from Windows tools
            # surrogateescape keeps a non-UTF-8 file name's bytes (os.fsencode gives them back)
            text = raw.decode("utf-8", "surrogateescape").strip()
            if not text:
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                bad.append(BadLine(number, f"not valid JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(row, dict):
                bad.append(BadLine(number, f"expected a JSON object, got {type(row).__name__}"))
                continue
            p, key, err = _path_of(row)
            if err:
                bad.append(BadLine(number, err))
                continue
            meta = {k: _json_value(v) for k, v in row.items() if k != key}
            good.append(ManifestLine(p, number, meta))
    return good, bad


def _json_value(v: Any) -> Any:
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v


def _read_csv(path: str) -> tuple[list[ManifestLine], list[BadLine]]:
    good: list[ManifestLine] = []
    bad: list[BadLine] = []
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        key = next((k for k in PATH_KEYS if k in header), None)
        if key is None:
            shown = ", ".join(display_path(h) for h in header) or "none"
            return [], [BadLine(None, f"no 'path' column (columns: {shown})")]
        rows: list[tuple[int, dict[str, str | None]]] = []
        try:
            for row in reader:
                if None in row:  # more cells than the header names
                    n = len(header) + len(row[None])
                    bad.append(BadLine(reader.line_num, f"{n} fields, header has {len(header)}"))
                    continue
                rows.append((reader.line_num, row))
        except csv.Error as e:
            bad.append(BadLine(reader.line_num, f"not valid CSV ({e})"))
    typed = _csv_types(header, [r for _, r in rows], skip=key)
    for number, row in rows:
        p = row.get(key)
        if not p or not p.strip():
            bad.append(BadLine(number, f"'{key}' is empty"))
            continue
        meta = {k: typed[k](row.get(k)) for k in header if k != key}
        good.append(ManifestLine(p, number, meta))
    return good, bad


def _csv_types(header: list[str], rows: list[dict], skip: str) -> dict[str, Any]:
    """A parser per column: the narrowest of bool / int / float that all its cells fit, else
    text. '007' stays text (an identifier, not the number 7)."""
    parsers: dict[str, Any] = {}
    for col in header:
        if col == skip:
            continue
        cells = [r.get(col) for r in rows]
        cells = [c.strip() for c in cells if c is not None and c.strip()]
        parsers[col] = _text
        for parse in (_bool, _int, _float):
            if cells and all(_fits(parse, c) for c in cells):
                parsers[col] = parse
                break
    return parsers


def _fits(parse: Any, cell: str) -> bool:
    try:
        parse(cell)
    except ValueError:
        return False
    return True


def _text(c: str | None) -> str | None:
    return c if c else None


def _bool(c: str | None) -> bool | None:
    if c is None or not c.strip():
        return None
    low = c.strip().lower()
    if low not in ("true", "false"):
        raise ValueError(c)
    return low == "true"


def _int(c: str | None) -> int | None:
    if c is None or not c.strip():
        return None
    v = int(c.strip())
    if str(v) != c.strip().lstrip("+"):
        raise ValueError(c)
    return v


def _float(c: str | None) -> float | None:
    if c is None or not c.strip():
        return None
    if re.match(r"[+-]?0[0-9]", c.strip()):  # '007', '0123.5': an identifier, not a number
        raise ValueError(c)
    return float(c)


class MetaTypes:
    """Arrow types of `meta_*` columns: the table's where it has them (stable across ingests),
    else inferred from every value this ingest brings."""

    def __init__(self, existing: pa.Schema | None) -> None:
        self.types: dict[str, pa.DataType] = {}
        self.new: list[str] = []  # columns this ingest adds, in first-seen order
        if existing is not None:
            for f in existing:
                if f.name.startswith(META_PREFIX):
                    self.types[f.name] = f.type
        self._seen: dict[str, list[Any]] = {}

    def observe(self, meta: dict[str, Any]) -> None:
        for key, value in meta.items():
            col = meta_column(key)
            if col in self.types and col not in self._seen:
                continue
            if col not in self._seen:
                self._seen[col] = []
                self.new.append(col)
            if value is not None and len(self._seen[col]) < 10_000:
                self._seen[col].append(value)

    def settle(self) -> None:
        """Fix the type of each new column from the values observed."""
        for col in self.new:
            self.types[col] = _infer(self._seen[col])
        self._seen.clear()

    def fields(self) -> list[pa.Field]:
        return [pa.field(c, self.types[c]) for c in self.new]

    def coerce(self, meta: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """({column: value}, errors): a value that does not fit its column is null + an error."""
        out: dict[str, Any] = {}
        errors: list[str] = []
        for key, value in meta.items():
            col = meta_column(key)
            typ = self.types[col]
            ok, v = _convert(value, typ)
            if ok:
                out[col] = v
            else:
                kind = type(value).__name__
                errors.append(f"{col}: expected {typ}, got {kind} {value!r} (stored as null)")
        return out, errors


def _infer(values: list[Any]) -> pa.DataType:
    kinds = {_kind(v) for v in values}
    if not kinds:
        return pa.string()
    if kinds == {"int", "float"}:
        return pa.float64()
    first = _kind(values[0]) if len(kinds) > 1 else kinds.pop()
    return {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}.get(first, pa.string())


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    return "str"


def _convert(value: Any, typ: pa.DataType) -> tuple[bool, Any]:
    if value is None:
        return True, None
    kind = _kind(value)
    if pa.types.is_boolean(typ):
        return kind == "bool", value if kind == "bool" else None
    if pa.types.is_integer(typ):
        return kind == "int", value if kind == "int" else None
    if pa.types.is_floating(typ):
        return kind in ("int", "float"), float(value) if kind in ("int", "float") else None
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return kind == "str", display_path(value) if kind == "str" else None
    return False, None
