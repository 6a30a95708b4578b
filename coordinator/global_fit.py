"""The fit step of a global stage, run by the job driver before the per-fragment assign pass."""

from __future__ import annotations

import logging
import time

from sila.global_stage import FitContext, FitStore

log = logging.getLogger(__name__)


def ensure_fit(lake, cls, stage, recompute: bool) -> bool:
    """Fit `stage` when it is global and has no usable fit; returns the `recompute` to use.

    A new fit (none yet, changed settings/version, or `--recompute` = refit) resets the
    stage's columns so every row is assigned against it. Otherwise the stage's `update` decides
    the rows added since (all of them together, before any worker starts) in a new version of
    the fit; the assign pass then computes the fragments its lineage makes due.
    """
    if not cls.is_global:
        return recompute
    store = FitStore(lake, cls.table, cls.name)
    current = store.current()
    sig = stage.signature_on(lake)  # settings, version and the rows it reads (fit_scope)
    ctx = FitContext(seed=cls.fit_seed, sample_rows=cls.fit_sample_rows, lake_uri=lake.uri)
    if current is not None and current.signature == sig and not recompute:
        t0 = time.monotonic()
        update = stage.update(lake, current, ctx)  # rows added since: decided together, here
        if update is None:
            stage.use_fit(current)  # part of the work identity (GlobalStage.model_identity)
            return False
        _save(store, stage, update, sig, lake, t0)
        log.info("stage %s: fit %s updated as %s in %.1f s", cls.name, current.fit_id,
                 update.fit_id, time.monotonic() - t0)  # fmt: skip
        return False
    why = (
        "--recompute"
        if recompute
        else ("no fit yet" if current is None else "settings/scope changed")
    )
    t0 = time.monotonic()
    fit = stage.fit(lake, ctx)
    _save(store, stage, fit, sig, lake, t0)
    log.info(
        "stage %s: new fit %s (%s) in %.1f s", cls.name, fit.fit_id, why, time.monotonic() - t0
    )
    return True


def _save(store: FitStore, stage, fit, sig: str, lake, t0: float) -> None:
    """Store `fit` (a new fit or an update) as current and take it for the stage."""
    fit.signature = sig
    # what the fit learned about its input, stamped on the columns by every assign worker
    fit.summary.setdefault("column_facts", stage.fit_facts(lake))
    fit.summary.setdefault("fit_s", round(time.monotonic() - t0, 2))
    store.save(fit)
    stage.use_fit(fit)
