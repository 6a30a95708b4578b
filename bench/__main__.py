"""Run a benchmark by name: `python -m bench discovery`."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench NAME [args]\nbenchmarks: " + ", ".join(names))
        return 0
    if argv[0] not in names:
        print(f"no benchmark '{argv[0]}' (have: {', '.join(names)})", file=sys.stderr)
        return 2
    mod = importlib.import_module(f"bench.{argv[0]}")
    return mod.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
