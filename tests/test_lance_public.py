"""Runtime code uses Lance's public API only (issue 28): a private name may vanish in any
pylance release, so a module of the runtime packages that reaches one fails here.

Private means: a module of lance whose path has a part starting with "_" (or the extension
module `lance.lance`), a `lance.<...>._name` attribute, or an attribute starting with "_" that
a Lance dataset, fragment or scanner has (`ds._take_rows`, `other._ds`) used on anything but
`self`/`cls` (a SILA class may name its own members as it likes).
"""

from __future__ import annotations

import ast
from pathlib import Path

import lance
import lance.dataset
import lance.fragment
import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ["sila", "stages", "coordinator", "retrieval", "cli", "viewer"]


@pytest.fixture(scope="module")
def lance_private_names(tmp_path_factory) -> frozenset[str]:
    """Every single-underscore name of Lance's classes and of a real dataset's objects."""
    ds = lance.write_dataset(pa.table({"x": [1, 2]}), tmp_path_factory.mktemp("l") / "t.lance")
    objects: list = [ds, ds.get_fragments()[0], ds.scanner(), ds.get_fragments()[0].data_files()[0]]
    for mod in (lance, lance.dataset, lance.fragment):
        objects += [o for o in vars(mod).values() if isinstance(o, type)]
    names = {n for o in objects for n in dir(o) if n.startswith("_") and not n.startswith("__")}
    return frozenset(names)


def _private_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "lance" and (name == "lance.lance" or any(p.startswith("_") for p in parts))


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def private_lance_uses(source: str, private: frozenset[str]) -> list[tuple[int, str]]:
    """(line, what) for every private Lance name `source` uses."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _private_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _private_module(node.module):
                found.append((node.lineno, node.module))
            elif node.module.split(".")[0] == "lance":
                bad = [a.name for a in node.names if a.name.startswith("_")]
                found += [(node.lineno, f"{node.module}.{n}") for n in bad]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__"):
                continue
            root = _root_name(node.value)
            if root == "lance" or (node.attr in private and root not in ("self", "cls")):
                found.append((node.lineno, f".{node.attr}"))
    return found


def test_the_scan_sees_private_names(lance_private_names):
    """The scan is not vacuous: each kind of private use it must catch."""
    snippet = (
        "import lance._arrow\n"
        "from lance.lance import _Dataset\n"
        "from lance.dataset import _coerce_reader\n"
        "rows = ds._take_rows([1])\n"
        "other = blobs._ds\n"
        "lance.dataset._coerce_reader(x)\n"
        "self._ds = 1\n"  # a SILA class's own member: allowed
    )
    got = sorted(line for line, _ in private_lance_uses(snippet, lance_private_names))
    assert got == [1, 2, 3, 4, 5, 6]


def test_runtime_packages_use_no_private_lance_name(lance_private_names):
    bad = []
    for pkg in RUNTIME:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for line, what in private_lance_uses(path.read_text(), lance_private_names):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert not bad, "private Lance names (use the public API):\n" + "\n".join(bad)
