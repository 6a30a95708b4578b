"""`sila doctor`: what needs a person or an agent, each finding with the command that fixes it.

Findings come from the job records, the lease files and `sila status` (fragment metadata), plus
one scan of a stage's error column where it has errors. Severity "action" means someone must
act (exit status 1); "info" is worth knowing but needs nothing now.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import time
from dataclasses import asdict, dataclass

from sila.coordinator.leases import LeaseStore
from sila.coordinator.ops.jobs import JobLog

# A running job writes its record at least this often (coordinator/run.py heartbeat);
# a record silent for longer belongs to a stalled or dead job.
STALL_AFTER_S = 300.0


@dataclass
class Finding:
    kind: str  # dead_job | stalled_job | failed_job | orphan_lease | stale | pending | row_errors
    # | ingest_failed | dangling
    severity: str  # "action" | "info"
    table: str | None
    stage: str | None
    message: str
    fix: str | None  # the exact command that fixes it
    detail: dict | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_here(host: str | None, pid: int | None) -> bool:
    """True only when we can tell: the owner ran on this host and its process is gone."""
    return bool(host == socket.gethostname() and pid and not _pid_alive(int(pid)))


def _cmd(lake, *args: str) -> str:
    return " ".join(["sila", *map(shlex.quote, args), "--lake", shlex.quote(lake.uri)])


def _specs(lake) -> dict[tuple[str, str], str]:
    """(table, stage) -> how `sila run` finds the stage again (name, file.py:Class, module)."""
    from sila.schema import owner, spec_of

    out: dict[tuple[str, str], str] = {}
    for name in lake.tables():
        for f in lake.table(name).schema:
            o, spec = owner(f), spec_of(f)
            if o and spec:
                out.setdefault((name, o), spec)
    return out


def _job_cmd(lake, j: dict, spec: str | None) -> str:
    """The command that started the job, when it was the CLI; else a plain `sila run`."""
    argv = j.get("argv") or []
    if len(argv) > 2 and os.path.basename(argv[0]) == "sila" and argv[1] in ("run", "pipeline"):
        return shlex.join(["sila", *argv[1:]])
    return _cmd(lake, "run", spec or j.get("stage") or "?")


def diagnose(lake, *, stall_after_s: float = STALL_AFTER_S, now: float | None = None) -> dict:
    """All findings for `lake`: {"ok": bool, "findings": [...], "checked_at": t}."""
    from sila.coordinator.ops.status import lake_status

    now = now or time.time()
    findings: list[Finding] = []
    specs = _specs(lake)
    jobs = JobLog(lake.store).all()
    running_stages: set[tuple[str, str]] = set()
    latest: dict[tuple[str, str], dict] = {}
    succeeded_at: dict[tuple[str, str], float] = {}
    for j in jobs:
        if j.get("state") == "succeeded":
            key = (j.get("table"), j.get("stage"))
            succeeded_at[key] = max(succeeded_at.get(key, 0.0), float(j.get("started_at") or 0))
    for j in jobs:  # sorted by start time: the last one per stage wins
        key = (j.get("table"), j.get("stage"))
        state = j.get("state")
        superseded = succeeded_at.get(key, -1.0) > float(j.get("started_at") or 0)
        if state == "running" and superseded:
            continue  # a later job of the stage finished: this one's work is done or redone
        if state == "running":
            lag = now - float(j.get("heartbeat_at") or j.get("started_at") or now)
            if dead_here(j.get("host"), j.get("pid")):
                findings.append(
                    _job_finding(lake, j, "dead_job", "died without a final state", specs)
                )
                continue
            if lag > stall_after_s:
                findings.append(
                    _job_finding(lake, j, "stalled_job", f"no heartbeat for {lag:.0f} s", specs)
                )
                continue
            running_stages.add(key)
        latest_of = latest.get(key)
        if latest_of is None or state in ("succeeded", "failed") or latest_of["state"] == "running":
            latest[key] = j
    for (table, stage), j in latest.items():
        if j.get("state") == "failed" and (table, stage) not in running_stages:
            findings.append(
                Finding(
                    "failed_job",
                    "action",
                    table,
                    stage,
                    f"the last job of '{stage}' failed: {j.get('message', '')[:400]}",
                    _job_cmd(lake, j, specs.get((table, stage))),
                    {"job": j.get("job"), "log": j.get("log")},
                )
            )
    for lease in LeaseStore(lake.store).live():
        if dead_here(lease.get("host"), lease.get("pid")):
            left = max(0.0, float(lease.get("expires_at", now)) - now)
            findings.append(
                Finding(
                    "orphan_lease",
                    "info",
                    lease["table"],
                    lease["stage"],
                    f"fragment {lease['fragment']} is leased by a dead process "
                    f"(pid {lease.get('pid')}); it expires in {left:.0f} s and is then taken over",
                    _cmd(lake, "run", specs.get((lease["table"], lease["stage"]), lease["stage"])),
                    {"fragment": lease["fragment"], "job": lease.get("job")},
                )
            )
    status = lake_status(lake)
    for table, t in status["tables"].items():
        for stage, s in t.get("stages", {}).items():
            spec = specs.get((table, stage), stage)
            findings += _stage_findings(
                lake, table, stage, spec, s, (table, stage) in running_stages
            )
    findings += _dangling(lake, specs)
    findings += _ingest_failures(lake)
    need = [f for f in findings if f.severity == "action"]
    return {
        "ok": not need,
        "lake": lake.uri,
        "checked_at": now,
        "findings": [asdict(f) for f in findings],
    }


def _job_finding(lake, j: dict, kind: str, why: str, specs: dict) -> Finding:
    stage = j.get("stage")
    return Finding(
        kind,
        "action",
        j.get("table"),
        stage,
        f"job {j.get('job')} ({stage}, pid {j.get('pid')} on {j.get('host')}) {why}; "
        "its fragments resume from their checkpoints when the stage runs again",
        _job_cmd(lake, j, specs.get((j.get("table"), stage))),
        {"job": j.get("job"), "log": j.get("log")},
    )


def _stage_findings(
    lake, table: str, stage: str, spec: str, s: dict, running: bool
) -> list[Finding]:
    out: list[Finding] = []
    stale = int(s.get("stale_fragments") or 0)
    if stale:
        out.append(
            Finding(
                "stale",
                "action",
                table,
                stage,
                f"{stale} fragment(s) of '{stage}' were computed by other code, settings or "
                f"upstream values (now {s.get('current_version')}, table has {s.get('version')})",
                _cmd(lake, "run", spec, "--recompute"),
                {"stale_fragments": stale},
            )
        )
    pending = int(s.get("fragments_pending") or 0) + int(s.get("fragments_partial") or 0)
    if pending and not running:
        deferred = int(s.get("fragments_deferred") or 0)
        msg = f"{pending} fragment(s) of '{stage}' are not computed yet"
        if deferred:
            msg += f" ({deferred} wait for an upstream stage)"
        out.append(Finding("pending", "action", table, stage, msg, _cmd(lake, "run", spec), s))
    errors = int(s.get("errors") or s.get("row_errors") or 0)
    if errors:
        out.append(_row_errors(lake, table, stage, spec, errors))
    return out


def _row_errors(lake, table: str, stage: str, spec: str, errors: int) -> Finding:
    """A stage's row errors; `--retry-errors` is the fix only for rows a retry can change
    (crashes, timeouts): the stage's verdict on bad input would only fail again."""
    samples = _error_samples(lake, table, stage)
    top = "; ".join(f"{n} x {m}" for m, n in samples.get("top", [])[:3])
    retryable = int(samples.get("retryable_rows", 0))
    if samples.get("retryable", True):
        return Finding(
            "row_errors",
            "action",
            table,
            stage,
            f"{errors} row(s) of '{stage}' have errors, {retryable} of them crashes or timeouts "
            f"a retry may fix; most common: {top}",
            _cmd(lake, "run", spec, "--retry-errors"),
            samples,
        )
    return Finding(
        "row_errors",
        "info",
        table,
        stage,
        f"{errors} row(s) of '{stage}' have errors: the stage's answer for their input (bad or "
        f"unsupported media), which a retry gives again; most common: {top}. Fix or remove the "
        "inputs (`sila remove --where ...`) if they should not be in the lake",
        None,
        samples,
    )


_UNEXPECTED = re.compile(r"^(worker crashed|[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Interrupt)\b)")
_VERDICTS = re.compile(r"^(sila\.errors\.)?(RowError|MediaError)\b")  # the row's answer


def _unexpected(message: str) -> bool:
    """True for an error a retry may change: a crash or an exception the stage did not expect."""
    return bool(_UNEXPECTED.match(message or "")) and not _VERDICTS.match(message or "")


def _error_samples(lake, table: str, stage: str, limit: int = 5) -> dict:
    """The most frequent error message classes of a stage (one scan of its error column), each
    with the id of one row that has it."""
    err = f"{stage}_error"
    try:
        ds = lake.table(table)
        col = ds.to_table(columns=["id", err], filter=f"{err} IS NOT NULL")
    except Exception as e:  # noqa: BLE001 - doctor reports, never crashes
        return {"top": [(f"could not read {err}: {e}", 0)]}
    from sila.coordinator.ops.errors import message_class

    counts: dict[str, int] = {}
    example: dict[str, str] = {}
    # grouped by message class: a message naming its own row's id and path is one kind of error
    for rid, msg in zip(col.column("id").to_pylist(), col.column(err).to_pylist(), strict=True):
        head = message_class(msg or "")
        counts[head] = counts.get(head, 0) + 1
        example.setdefault(head, rid)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    # Bad input that failed again on a retry is the answer, not a fault to fix.
    jobs = [
        j
        for j in JobLog(lake.store).all()
        if j.get("stage") == stage and j.get("state") == "succeeded"
    ]
    retried = bool(jobs) and "--retry-errors" in (jobs[-1].get("argv") or [])
    # A RowError or MediaError is the row's answer (bad input, "no picture to thumbnail"); only
    # crashes and unexpected exceptions ("ValueError: ...", "worker crashed ...") may go away.
    retryable_rows = sum(n for m, n in counts.items() if _unexpected(m))
    return {
        "top": top,
        "examples": {m: example[m] for m, _ in top},
        "retryable_rows": 0 if retried else retryable_rows,
        "retryable": not retried and retryable_rows > 0,
    }


def _ingest_failures(lake, shown: int = 5) -> list[Finding]:
    """Source files that failed at ingest (unreadable, corrupt, not media): the lake is not
    healthy while they are in it. A repaired file has new bytes, so a new id: it is ingested
    again as a new source, and the failed rows are removed."""
    if "sources" not in lake.tables():
        return []
    ds = lake.table("sources")
    names = set(ds.schema.names)
    if "ingest_error" not in names:
        return []
    col = "uri" if "uri" in names else "id"
    try:
        bad = ds.to_table(columns=[col, "ingest_error"], filter="ingest_error IS NOT NULL")
    except Exception as e:  # noqa: BLE001 - doctor reports, never crashes
        return [Finding("ingest_failed", "info", "sources", "ingest", f"cannot read: {e}", None)]
    if not bad.num_rows:
        return []
    rows = sorted(
        zip(bad.column(col).to_pylist(), bad.column("ingest_error").to_pylist(), strict=True),
        key=lambda r: str(r[0]),
    )
    listed = "; ".join(f"{uri}: {(err or '').splitlines()[0][:160]}" for uri, err in rows[:shown])
    more = f"; and {len(rows) - shown} more" if len(rows) > shown else ""
    where = "ingest_error IS NOT NULL"
    return [
        Finding(
            "ingest_failed",
            "action",
            "sources",
            "ingest",
            f"{len(rows)} of {ds.count_rows()} source file(s) failed at ingest: {listed}{more}. "
            "Repair or replace them and ingest them again (`sila ingest PATH`); then remove "
            "the failed rows",
            shlex.join(["sila", "remove", "--where", where, "--apply", "--lake", lake.uri]),
            {"files": [{"uri": u, "error": e} for u, e in rows]},
        )
    ]


def _dangling(lake, specs: dict) -> list[Finding]:
    """`<stage>_of` values naming rows that no longer exist (e.g. after `sila remove`): those
    rows' decisions refer to a removed representative, so the stage must be recomputed."""
    from sila.schema import owner

    out = []
    for name in lake.tables():
        ds = lake.table(name)
        if "id" not in ds.schema.names:
            continue
        for f in ds.schema:
            stage = owner(f)
            if not (stage and f.name.endswith("_of")):
                continue
            try:
                n = lake.sql(
                    f"select count(*) as n from {name} a where a.{f.name} is not null and "
                    f"not exists (select 1 from {name} b where b.id = a.{f.name})"
                )["n"][0].as_py()
            except Exception:  # noqa: BLE001 - doctor reports, never crashes
                continue
            if n:
                out.append(
                    Finding(
                        "dangling",
                        "action",
                        name,
                        stage,
                        f"{n} row(s) of '{stage}' name a {f.name} that no longer exists "
                        "(removed): their decision is stale",
                        _cmd(lake, "run", specs.get((name, stage), stage), "--recompute"),
                        {"rows": n, "column": f.name},
                    )
                )
    return out
