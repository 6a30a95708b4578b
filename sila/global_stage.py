"""The *global* stage kind: fit once over (a seeded sample of) the table, then assign per fragment.

A `GlobalStage` adds `fit(lake, ctx) -> Fit` to the Stage contract. The coordinator
(`sila.coordinator.global_fit.ensure_fit`) runs the fit before the job when there is none, when
the stage's settings or version changed, or on `--recompute` (= refit), and stores it,
versioned, under `_sila/fits/<table>/<stage>/<fit_id>/`. With a usable fit, the same step
calls `update(lake, fit, ctx)`: a stage that decides rows added since (dedup) returns a new
version of the fit; its `lineage` stays the same while no answer already in the table changes,
so only the new rows' fragments are due (a changed answer starts a lineage: every fragment is
looked up again). The assign pass is an ordinary
enrich pass through the usual leases, segments and commits: the platform hands `setup(ctx)`
the current fit (`ctx.fit`, kept as `self.fit_state`), and stamps its id into the columns'
metadata (`sila.fit`, from `column_facts()`), so a column is never half one fit and half
another.

Used by `dedup` (k-means centroids + groups) and meant for normalisers (per-dimension
statistics fitted on a sample, applied per row).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sila.errors import SilaError
from sila.stage import Stage, StageContext


@dataclass
class FitContext:
    """Handed to `GlobalStage.fit`."""

    seed: int = 0
    sample_rows: int = 100_000
    lake_uri: str = ""


@dataclass
class Fit:
    """A fitted artifact: named files (bytes) plus a JSON-able summary."""

    files: dict[str, bytes] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    fit_id: str = ""
    signature: str = ""
    created_at: float = 0.0


class FitStore:
    """`_sila/fits/<table>/<stage>/`: one folder per fit, `current.json` names the one in use."""

    def __init__(self, lake, table: str, stage: str) -> None:
        self.store = lake.store
        self.prefix = f"fits/{table}/{stage}"

    def current(self) -> Fit | None:
        raw = self.store.get(f"{self.prefix}/current.json")
        if raw is None:
            return None
        meta = json.loads(raw)
        return self.load(meta["fit_id"])

    def load(self, fit_id: str) -> Fit | None:
        raw = self.store.get(f"{self.prefix}/{fit_id}/fit.json")
        if raw is None:
            return None
        meta = json.loads(raw)
        files = {}
        for name in meta["files"]:
            data = self.store.get(f"{self.prefix}/{fit_id}/{name}")
            if data is None:
                raise SilaError(
                    f"fit {fit_id} is incomplete: {name} is missing; refit with --recompute"
                )
            files[name] = data
        return Fit(files, meta["summary"], fit_id, meta["signature"], meta["created_at"])

    def save(self, fit: Fit) -> Fit:
        """Write the files, then the fit's record, then point `current` at it (atomic puts)."""
        fit.created_at = time.time()
        digest = hashlib.sha1(fit.signature.encode())
        for name in sorted(fit.files):
            digest.update(name.encode())
            digest.update(hashlib.sha1(fit.files[name]).digest())
        fit.fit_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(fit.created_at))}-{digest.hexdigest()[:8]}"
        for name, data in fit.files.items():
            self.store.put(f"{self.prefix}/{fit.fit_id}/{name}", data)
        meta = {
            "fit_id": fit.fit_id,
            "signature": fit.signature,
            "created_at": fit.created_at,
            "files": sorted(fit.files),
            "summary": fit.summary,
        }
        self.store.put(f"{self.prefix}/{fit.fit_id}/fit.json", json.dumps(meta, indent=1).encode())
        self.store.put(f"{self.prefix}/current.json", json.dumps({"fit_id": fit.fit_id}).encode())
        return fit


class GlobalStage(Stage):
    """A stage that needs the whole table: `fit` first (once), then a per-fragment assign."""

    is_global: ClassVar[bool] = True
    fit_sample_rows: ClassVar[int] = 100_000
    fit_seed: ClassVar[int] = 0
    # set per instance: by the coordinator once it knows the fit, and by `setup` from ctx.fit
    fit_state: Fit | None = None
    fit_id: str | None = None
    fit_lineage: str | None = None  # the fit whose answers the table's values still are

    def fit(self, lake, ctx: FitContext) -> Fit:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, lake, fit: Fit, ctx: FitContext) -> Fit | None:
        """A new version of `fit` covering rows added (or removed) since, or None to keep it.
        Its summary's `lineage` names the fit it extends without changing any answer already
        assigned (None or absent: the version starts a lineage of its own)."""
        return None

    def use_fit(self, fit: Fit) -> None:
        """Take `fit` as the one the stage assigns against (its id and lineage)."""
        self.fit_id = fit.fit_id
        self.fit_lineage = fit.summary.get("lineage") or fit.fit_id

    def fit_signature(self) -> str:
        """What makes two fits interchangeable: the stage's version and effective settings."""
        conf = json.dumps(self.config, sort_keys=True, default=str)
        return f"{self.resolved_version()}|{conf}"

    def fit_scope(self, lake) -> str:
        """Which rows the fit would read now (e.g. "train" once a split exists, else "all"):
        part of the fit's signature, so a fit whose input scope changed is stale and refitted."""
        return ""

    def signature_on(self, lake) -> str:
        """The signature a fit made now on `lake` carries: `fit_signature` plus `fit_scope`.
        A stored fit with another one is due again."""
        scope = self.fit_scope(lake)
        return f"{self.fit_signature()}|scope={scope}" if scope else self.fit_signature()

    def setup(self, ctx: StageContext) -> None:
        fit = ctx.fit
        if fit is None:
            raise SilaError(
                f"stage '{self.name}' has no fit yet; run it with `sila run {self.name}` (the "
                "coordinator fits before assigning)"
            )
        self.fit_state = fit
        self.use_fit(fit)
        self.load_fit(fit, ctx)

    def column_facts(self) -> dict[str, str]:
        """The fit the columns were assigned against, and what the fit recorded about its input
        (`fit_facts`, kept in the fit's summary)."""
        fit = self.fit_state
        if fit is None:  # setup did not run in this worker (a step that needs no setup)
            return {}
        return {"sila.fit": fit.fit_id, **fit.summary.get("column_facts", {})}

    def model_identity(self) -> str | None:
        """The fit is part of the work: rows assigned under another fit lineage are stale (a
        version that only added answers keeps its lineage)."""
        return f"{self.model}#fit={self.fit_lineage or self.fit_id}"

    def fit_facts(self, lake) -> dict[str, str]:
        """Extra column metadata learned at fit time, e.g. that the vectors it grouped came from
        random weights: stored with the fit and stamped on the columns assigned against it."""
        return {}

    def load_fit(self, fit: Fit, ctx: StageContext) -> None:
        """Unpack the fit's files for `compute` (once per worker)."""
