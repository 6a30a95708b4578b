"""Helpers shared by benchmarks: timing and the one output format."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

os.environ.setdefault("LANCE_LOG", "error")


def report(name: str, ours: float, ref: float, unit: str = "s", note: str = "") -> None:
    """`name: ours=X ref=Y ratio=Z` — ratio is ours/ref (for times: < 1 means we are faster)."""
    ratio = ours / ref if ref else float("inf")
    print(
        f"{name}: ours={ours:.4g}{unit} ref={ref:.4g}{unit} ratio={ratio:.3f}"
        + (f"  # {note}" if note else ""),
        flush=True,
    )


@contextmanager
def timer():
    t = [time.perf_counter(), None]
    yield t
    t[1] = time.perf_counter() - t[0]
