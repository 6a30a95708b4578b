"""Fault injection for the kill tests: `SILA_FAULT=<point>:<n>` SIGKILLs this process the n-th
time it reaches <point> (before_checkpoint, after_checkpoint, before_commit, during_commit);
`<point>:<n>:stop` SIGSTOPs it instead (a paused worker, resumed by SIGCONT).
Unset in normal use; costs one dict lookup per point."""

from __future__ import annotations

import os
import signal
from collections import Counter

_seen: Counter[str] = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get("SILA_FAULT")
    if not spec:
        return
    point, _, rest = spec.partition(":")
    if point != name:
        return
    nth, _, action = rest.partition(":")
    _seen[name] += 1
    if _seen[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)
