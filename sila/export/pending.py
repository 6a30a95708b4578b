"""Is the selection curated? The stages an export selects on, and the selected rows they have not
computed yet.

An export selects on decisions (`quality_keep = true`, `dedup_keep = true`, a caption, the
split it shards by): a row whose decision was never computed is not "keep", but shipping a lake
whose new clips nobody judged yet is never what a user wants either. So an export first asks,
per stage it selects on, which fragments that stage has not done (judged exactly as `sila status`
and a run judge them: manifest plus SILA's records) and how many rows there would be selected;
any such row refuses the export unless `--allow-pending` says to ship only what is curated.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field

from sila.errors import SilaError
from sila.schema import owner, spec_of

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class PendingStage:
    """One stage the selection depends on, with the rows it has not computed yet."""

    stage: str
    columns: list[str]
    rows: int = 0  # rows the export would consider whose decision is not computed
    fragments: dict[str, int] = field(default_factory=dict)  # status -> fragments not done


def referenced_stages(schema, where: str | None, extra: list[str] = ()) -> dict[str, list[str]]:
    """stage -> its columns that `where` (or `extra`, e.g. the split column) reads. Only stages
    that run on this table count (their `<stage>_error` is here): ingest's and an explode
    stage's child columns are facts of the row, not decisions."""
    names = set(schema.names)
    used = set(_WORD.findall(where or "")) | set(extra)
    out: dict[str, list[str]] = {}
    for f in schema:
        stage = owner(f)
        if f.name in used and stage and stage != "ingest" and f"{stage}_error" in names:
            out.setdefault(stage, []).append(f.name)
    return out


def _latest_jobs(lake) -> tuple[dict[str, str], dict[str, dict], list[dict]]:
    """Per stage the identity and settings of its latest job (what "stale" is judged against,
    as `sila status` does), and every job record."""
    from sila.coordinator.ops.jobs import JobLog

    jobs = JobLog(lake.store).all()
    identities: dict[str, str] = {}
    settings: dict[str, dict] = {}
    for j in jobs:
        if j.get("identity"):
            identities[j["stage"]] = j["identity"]
        if j.get("settings"):
            settings[j["stage"]] = j["settings"]
    return identities, settings, jobs


def pending_decisions(
    lake, ds, stages: dict[str, list[str]], base_where: str | None
) -> list[PendingStage]:
    """The stages in `stages` with rows not computed on `ds` among those matching `base_where`
    (the selection without its decisions). A fragment the stage has not done counts whole
    (pending, waiting on an upstream stage, or computed under other code or settings); a
    partial one counts the rows with neither a value nor an error."""
    from sila.coordinator.discovery import fragment_states
    from sila.coordinator.state import DONE, GONE, PARTIAL

    identities, settings, _ = _latest_jobs(lake)
    out = []
    for stage, columns in sorted(stages.items()):
        p = PendingStage(stage, sorted(columns))
        works = fragment_states(ds, stage, lake.store, identities.get(stage), settings.get(stage))
        for w in works:
            if w.status in (DONE, GONE):
                continue
            cond = [f"({base_where})"] if base_where else []
            if w.status == PARTIAL:
                cond += [f"{c} IS NULL" for c in columns] + [f"{stage}_error IS NULL"]
            n = ds.get_fragment(w.ref.id).count_rows(filter=" AND ".join(cond) or None)
            if n:
                p.rows += n
                p.fragments[w.status] = p.fragments.get(w.status, 0) + 1
        if p.rows:
            out.append(p)
    return out


def run_command(lake, ds, stages: list[str]) -> list[str]:
    """The commands that compute `stages`: the pipeline that ran them last, when one did, else
    one `sila run` per stage (a user stage by the file or module its columns name)."""
    _, _, jobs = _latest_jobs(lake)
    for j in reversed(jobs):
        argv = j.get("argv") or []
        if j.get("stage") in stages and len(argv) > 2 and argv[1] == "pipeline":
            return [shlex.join(["sila", *argv[1:]])]
    specs = {owner(f): spec_of(f) for f in ds.schema if owner(f) and spec_of(f)}
    lake_arg = ["--lake", lake.uri]
    return [shlex.join(["sila", "run", specs.get(s) or s, *lake_arg]) for s in stages]


def check_curated(
    lake, ds, stages: dict[str, list[str]], base_where: str | None, allow: bool
) -> dict | None:
    """Refuse (SilaError naming the stages and the command) when a stage the selection reads has
    rows to compute; with `allow`, the record the manifest keeps of what was not curated."""
    pending = pending_decisions(lake, ds, stages, base_where)
    if not pending:
        return None
    names = [p.stage for p in pending]
    cmds = run_command(lake, ds, names)
    if not allow:
        detail = "; ".join(
            f"{p.stage} ({p.rows} row(s): "
            + ", ".join(f"{n} fragment(s) {s}" for s, n in sorted(p.fragments.items()))
            + ")"
            for p in pending
        )
        raise SilaError(
            f"export refused: the selection reads stages not computed on every row yet: {detail}. "
            f"Compute them first: {' ; '.join(cmds)} -- or pass --allow-pending to export only "
            "the rows already curated (recorded in the manifest)"
        )
    return {
        "allowed": True,
        "note": "rows whose decisions were not computed are left out (a decision never "
        "computed is not 'keep'); rows of stale fragments carry decisions of other settings",
        "stages": [asdict(p) for p in pending],
        "commands": cmds,
    }
