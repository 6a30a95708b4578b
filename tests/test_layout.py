"""The layout shows the architecture: small runtime modules, a contract-only `sila/` top level,
every package shipped, and a README whose Layout section names every package."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("sila", "stages", "coordinator", "retrieval", "cli", "viewer")
MAX_LINES = 450  # the house aim is ~400; this is the line past which a module must be split
CONTRACT = {
    "__init__",
    "lake",
    "stage",
    "decorator",
    "model",
    "registry",
    "schema",
    "errors",
    "recipe",
    "global_stage",
    "filters",
    "column_stamp",
}


def runtime_modules() -> list[Path]:
    return sorted(p for top in RUNTIME for p in (ROOT / top).rglob("*.py"))


def package_folders() -> dict[str, str]:
    """Package name -> its folder relative to the repo, as pyproject.toml maps them."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = conf["package-dir"]
    out = {}
    for pkg in conf["packages"]:
        top = max((p for p in roots if pkg == p or pkg.startswith(p + ".")), key=len)
        rest = pkg[len(top) :].lstrip(".").replace(".", "/")
        out[pkg] = f"{roots[top]}/{rest}" if rest else roots[top]
    return out


def test_runtime_modules_are_small():
    sizes = {
        p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in runtime_modules()
    }
    offenders = {p: n for p, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not offenders, (
        f"runtime modules over {MAX_LINES} lines (split them by responsibility): "
        + ", ".join(f"{p} ({n})" for p, n in offenders.items())
    )


def test_sila_top_level_holds_only_the_contract():
    extra = sorted(p.stem for p in (ROOT / "sila").glob("*.py") if p.stem not in CONTRACT)
    assert not extra, (
        f"sila/ holds only the stage contract; move {extra} into a package "
        "(sila/media, sila/ingest, sila/episodes, sila/export, sila/demo, sila/endpoints) "
        "or under tests/ for test doubles"
    )


def test_runtime_never_imports_tests_or_bench():
    """Neither ships in the wheel: a runtime import of them works in the repo and breaks
    `pip install .`."""
    bad = []
    for p in runtime_modules():
        for node in ast.walk(ast.parse(p.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad += [
                f"{p.relative_to(ROOT)}: {n}"
                for n in names
                if n.split(".")[0] in ("tests", "bench")
            ]
    assert not bad, bad


def test_every_package_folder_ships_in_the_wheel():
    listed = set(package_folders().values())
    folders = {
        p.parent.relative_to(ROOT).as_posix()
        for top in RUNTIME
        for p in (ROOT / top).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert not folders - listed, (
        f"folders with modules that pyproject.toml does not package: {sorted(folders - listed)}"
    )
    assert all((ROOT / f / "__init__.py").is_file() for f in listed)


def test_readme_layout_names_every_package():
    readme = (ROOT / "README.md").read_text()
    layout = re.search(r"^## Layout\n(.*?)(?=^## )", readme, re.S | re.M)
    assert layout, "README.md has no '## Layout' section"
    text = layout.group(1)
    missing = [f for f in package_folders().values() if f"`{f}/`" not in text]
    assert not missing, f"README's Layout section does not name {missing}"
    assert "docs/architecture.md" in readme


TOPS = (*RUNTIME, "datasets", "docs", "tests", "bench", "infra")


def test_paths_named_in_the_docs_exist():
    """Every repo path the README and docs/ name in backticks or links exists (no stale names
    after a move)."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    tops = "|".join(TOPS)
    pattern = re.compile(rf"`((?:{tops})/[\w./-]*)`|\]\(((?:{tops})/[\w./-]*)\)")
    stale = []
    for doc in docs:
        for m in pattern.finditer(doc.read_text()):
            path = m.group(1) or m.group(2)
            base = doc.parent if m.group(2) and doc.parent != ROOT else ROOT
            if not (base / path).exists() and not (ROOT / path).exists():
                stale.append(f"{doc.relative_to(ROOT)}: {path}")
    assert not stale, stale
