"""Operator hooks: `--on-success CMD` / `--on-failure CMD` run a command with a job record's path.

The path replaces `{record}` in CMD, else it is appended as the last argument; it is also in
`$SILA_JOB_RECORD`. A hook that fails is logged; it never changes the job's own outcome.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess

log = logging.getLogger(__name__)


def record_path(lake, key: str) -> str:
    """A local path (or URI) of the record `key` under the lake's `_sila/`."""
    return f"{lake.uri.rstrip('/')}/_sila/{key}"


def run_hook(cmd: str | None, record: str, timeout_s: float = 300.0) -> int | None:
    if not cmd:
        return None
    line = (
        cmd.replace("{record}", shlex.quote(record))
        if "{record}" in cmd
        else f"{cmd} {shlex.quote(record)}"
    )
    try:
        done = subprocess.run(
            line,
            shell=True,
            env={**os.environ, "SILA_JOB_RECORD": record},
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log.warning("hook %r ran past %.0f s and was stopped", cmd, timeout_s)
        return -1
    if done.returncode:
        log.warning("hook %r exited with %d", cmd, done.returncode)
    return done.returncode
