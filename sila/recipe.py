"""Recipes: TOML files in `datasets/` naming sources, stages and their settings.

    [stages.thumbnail]
    max_side = 384

CLI `--set thumbnail.max_side=256` (or `--set max_side=256` for the stage being run) overrides.
"""

from __future__ import annotations

import ast
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from sila.errors import SilaError

# Shipped recipes, taxonomies and schemas: package data `sila.datasets` (the repo's `datasets/`),
# so a wheel install finds them as an editable one does.
REPO_DATASETS = Path(str(resources.files("sila.datasets")))


def find_recipe(name_or_path: str) -> Path:
    p = Path(name_or_path)
    candidates = [p, Path("datasets") / p, REPO_DATASETS / p]
    if p.suffix != ".toml":
        candidates += [c.with_name(c.name + ".toml") for c in candidates]
    for c in candidates:
        if c.is_file():
            return c
    known = sorted(x.stem for x in REPO_DATASETS.glob("*.toml")) if REPO_DATASETS.is_dir() else []
    raise SilaError(
        f"recipe '{name_or_path}' not found (known: {', '.join(known) or 'none'}); pass a .toml path"
    )


def load_recipe(name_or_path: str | None) -> dict[str, Any]:
    if not name_or_path:
        env = os.environ.get("SILA_RECIPE")
        if not env:
            return {}
        name_or_path = env
    path = find_recipe(name_or_path)
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SilaError(f"recipe {path} is not valid TOML: {e}") from e


def parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False}.get(text.lower(), text)


def stage_settings(
    recipe: dict[str, Any], stage: str, overrides: list[str] | dict[str, Any] | None
) -> dict[str, Any]:
    settings = dict(recipe.get("stages", {}).get(stage, {}))
    if isinstance(overrides, dict):
        settings.update(overrides)
        return settings
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SilaError(f"--set expects KEY=VALUE, got {item!r}")
        prefix, dot, rest = key.partition(".")
        if dot and prefix != stage:
            continue  # a setting for another stage
        settings[rest if dot else key] = parse_value(value)
    return settings
