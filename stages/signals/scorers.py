"""Pluggable model scorers for the signal stages (aesthetic, DOVER, lip sync, separation ...).

A scorer is named by ``"module:factory"`` or ``"path/to/file.py:factory"``; the factory is
called with the scorer's weights path (may be "") and returns the callable the stage uses.
An empty spec means "no scorer": the stage writes nulls and says so in the column metadata.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
from typing import Any

from sila.errors import SilaError

log = logging.getLogger(__name__)

SCORER_KEY = b"sila.scorer"


def load_scorer(spec: str, weights: str = "", *, what: str) -> Any | None:
    """Build the scorer `spec` names (None for an empty spec); errors name the setting."""
    if not spec:
        return None
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise SilaError(
            f"{what}: scorer {spec!r} must look like 'module:factory' or 'file.py:factory'"
        )
    if weights and not os.path.exists(weights):
        raise SilaError(f"{what}: weights not found at {weights!r}; fix the path or unset it")
    try:
        if target.endswith(".py"):
            name = "sila_scorer_" + hashlib.sha1(os.path.abspath(target).encode()).hexdigest()[:8]
            mod_spec = importlib.util.spec_from_file_location(name, target)
            if mod_spec is None or mod_spec.loader is None:
                raise ImportError(target)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        factory = getattr(module, attr)
    except (ImportError, AttributeError, FileNotFoundError) as e:
        raise SilaError(f"{what}: cannot load scorer {spec!r}: {e}") from e
    return factory(weights)


def scorer_identity(spec: str, weights: str = "") -> str:
    """What the column metadata records: the scorer and its weights (file name + size), or none."""
    if not spec:
        return "none"
    if weights and os.path.exists(weights):
        return f"{spec}@{os.path.basename(weights)}:{os.path.getsize(weights)}"
    return spec
