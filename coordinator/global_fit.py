"""The fit step of a global stage, run by the job driver before the per-fragment assign pass."""

from __future__ import annotations

import logging
import time

from sila.global_stage import FitContext, FitStore

log = logging.getLogger(__name__)


def ensure_fit(lake, cls, stage, recompute: bool) -> bool:
    """Fit `stage` when it is global and has no usable fit; returns the `recompute` to use.

    A new fit (none yet, changed settings/version, or `--recompute` = refit) resets the
    stage's columns so every row is assigned against it. Otherwise only rows without outputs
    (e.g. a later ingest) are assigned against the stored fit: an existing group and its
    representative are never rewritten.
    """
    if not cls.is_global:
        return recompute
    store = FitStore(lake, cls.table, cls.name)
    current = store.current()
    sig = stage.fit_signature()
    if current is not None and current.signature == sig and not recompute:
        stage.fit_id = current.fit_id  # part of the work identity (GlobalStage.model_identity)
        return False
    why = "--recompute" if recompute else ("no fit yet" if current is None else "settings changed")
    t0 = time.monotonic()
    fit = stage.fit(
        lake, FitContext(seed=cls.fit_seed, sample_rows=cls.fit_sample_rows, lake_uri=lake.uri)
    )
    fit.signature = sig
    # what the fit learned about its input, stamped on the columns by every assign worker
    fit.summary.setdefault("column_facts", stage.fit_facts(lake))
    fit.summary.setdefault("fit_s", round(time.monotonic() - t0, 2))
    store.save(fit)
    stage.fit_id = fit.fit_id
    log.info(
        "stage %s: new fit %s (%s) in %.1f s", cls.name, fit.fit_id, why, time.monotonic() - t0
    )
    return True
