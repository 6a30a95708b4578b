"""`normalize`: per-dimension action normalisers, fitted once, applied per fragment.

A global stage (sila.global_stage): the fit reads `actions` of the rows assigned to `train`
when a split assignment exists (else of all rows, said in the fit summary and the column
metadata), over the parts each row's mask marks present, and stores both statistics: robust
quantiles (q01/q99 mapped to [-1, 1], as openpi does) and mean/std. The assign pass writes
`actions_norm` with the recipe's method; masked parts stay 0. `denormalize` is the inverse
for consumers (`load_normalizer(lake)` returns the stored statistics).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sila.stages.actions import ACTION_DIM, ACTION_LAYOUT, OFFSETS

from sila.errors import SilaError
from sila.global_stage import Fit, FitContext, FitStore, GlobalStage

EPS = 1e-6


def part_mask_to_dims(mask: list[bool]) -> np.ndarray:
    dims = np.zeros(ACTION_DIM, dtype=bool)
    for present, (name, _) in zip(mask, ACTION_LAYOUT, strict=True):
        if present:
            a, b = OFFSETS[name]
            dims[a:b] = True
    return dims


def fit_stats(rows: list[tuple[list, list[bool]]]) -> dict[str, list[float]]:
    """Statistics per dimension over the steps where the dimension is present."""
    acts = [np.asarray(a, dtype=np.float64).reshape(-1, ACTION_DIM) for a, _ in rows]
    steps = np.array([len(a) for a in acts], dtype=np.int64)
    matrix = np.concatenate(acts) if acts else np.zeros((0, ACTION_DIM))
    dims = np.stack([part_mask_to_dims(m) for _, m in rows]) if rows else np.zeros((0, ACTION_DIM))
    return matrix_stats(matrix, np.repeat(dims.astype(bool), steps, axis=0))


def matrix_stats(matrix: np.ndarray, present: np.ndarray) -> dict[str, list[float]]:
    """Statistics per dimension of `matrix` (steps x ACTION_DIM) over the steps `present`
    (same shape, bool) marks."""
    stats: dict[str, list] = {k: [] for k in ("q01", "q99", "mean", "std", "count")}
    for d in range(ACTION_DIM):
        v = matrix[present[:, d], d].astype(np.float64)
        n = len(v)
        if not n:
            v = np.zeros(1)
        stats["q01"].append(float(np.quantile(v, 0.01)))
        stats["q99"].append(float(np.quantile(v, 0.99)))
        stats["mean"].append(float(v.mean()))
        stats["std"].append(float(v.std()))
        stats["count"].append(int(n))
    return stats


def action_matrix(tbl: pa.Table) -> tuple[np.ndarray, np.ndarray, int]:
    """`actions` / `action_mask` rows -> (steps x ACTION_DIM float32 matrix, per-step bool mask
    of the dimensions present, rows left out for a non-finite value), built from the Arrow
    buffers: the fit holds numbers, never per-value Python objects."""
    acts = tbl.column("actions").combine_chunks()
    steps = pc.list_value_length(acts).fill_null(0).to_numpy().astype(np.int64)
    values = acts.flatten().flatten().to_numpy(zero_copy_only=False)
    matrix = values.reshape(-1, ACTION_DIM)
    masks = tbl.column("action_mask").to_pylist()  # one short list per row
    dims = np.stack([part_mask_to_dims(m or []) for m in masks]) if masks else None
    row_of_step = np.repeat(np.arange(len(steps)), steps)
    finite = np.isfinite(matrix).all(axis=1)
    bad_rows = np.unique(row_of_step[~finite])
    keep = np.ones(len(steps), dtype=bool)
    keep[bad_rows] = False
    if dims is None:
        return matrix, np.zeros(matrix.shape, dtype=bool), 0
    present = dims[row_of_step] & keep[row_of_step][:, None]
    return matrix, present, int(len(bad_rows))


def normalize(x: np.ndarray, stats: dict, method: str) -> np.ndarray:
    if method == "quantile":
        q01, q99 = np.asarray(stats["q01"]), np.asarray(stats["q99"])
        return (x - q01) / (q99 - q01 + EPS) * 2.0 - 1.0
    mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
    return (x - mean) / (std + EPS)


def denormalize(y: np.ndarray, stats: dict, method: str) -> np.ndarray:
    """The inverse of `normalize` (for policies that predict normalised actions)."""
    if method == "quantile":
        q01, q99 = np.asarray(stats["q01"]), np.asarray(stats["q99"])
        return (np.asarray(y) + 1.0) / 2.0 * (q99 - q01 + EPS) + q01
    mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
    return np.asarray(y) * (std + EPS) + mean


def load_normalizer(lake, table: str = "clips") -> dict:
    fit = FitStore(lake, table, "normalize").current()
    if fit is None:
        raise SilaError("no normaliser fitted yet: run `sila run normalize`")
    return json.loads(fit.files["stats.json"])


def bounded_sample(ds, flt: str, rows: int, seed: int) -> pa.Table:
    """The `actions`/`action_mask` rows matching `flt`, streamed batch by batch and each row
    kept with probability rows/total: memory follows the sample, not the table."""
    cols = ["actions", "action_mask"]
    total = ds.count_rows(filter=flt)
    if total <= rows:
        return ds.to_table(columns=cols, filter=flt)
    rng, p = np.random.default_rng(seed), rows / total
    kept = []
    for batch in ds.to_batches(columns=cols, filter=flt):
        pick = np.flatnonzero(rng.random(batch.num_rows) < p)
        if len(pick):
            kept.append(batch.take(pa.array(pick)))
    return (
        pa.Table.from_batches(kept, schema=kept[0].schema)
        if kept
        else ds.schema.empty_table().select(cols)
    )


class Normalize(GlobalStage):
    """Actions scaled per dimension by statistics fitted on the training rows."""

    name = "normalize"
    table = "clips"
    inputs = ["actions", "action_mask"]
    outputs = [pa.field("actions_norm", pa.list_(pa.list_(pa.float32())))]  # steps x ACTION_DIM
    where = "actions IS NOT NULL"
    fit_reads = ["split"]  # the fit uses the rows assigned to train (sila pipeline orders by it)
    version = "1"
    settings = {"method": "quantile"}  # or "meanstd"

    def fit(self, lake, ctx: FitContext) -> Fit:
        if self.config["method"] not in ("quantile", "meanstd"):
            raise SilaError(
                f"normalize: method must be 'quantile' or 'meanstd', got {self.config['method']!r}"
            )
        ds = lake.table(self.table)
        train = self.fit_scope(lake) == "train"
        scope = "rows assigned to train" if train else "all rows"
        flt = "actions IS NOT NULL" + (" AND split = 'train'" if train else "")
        tbl = bounded_sample(ds, flt, ctx.sample_rows, ctx.seed)
        # a row with a non-finite action (written before `actions` refused them) is left out:
        # one would make every normalised action of the table NaN
        matrix, present, excluded = action_matrix(tbl)
        rows = tbl.num_rows - excluded
        if not rows:
            raise SilaError(
                "normalize: no rows with finite actions to fit on: run `sila run actions` first"
            )
        stats = matrix_stats(matrix, present)
        buf = io.BytesIO(json.dumps({**stats, "scope": scope, "layout": ACTION_LAYOUT}).encode())
        summary = {"scope": scope, "rows": rows, "excluded_non_finite": excluded}
        return Fit({"stats.json": buf.getvalue()}, summary)

    def fit_scope(self, lake) -> str:
        """ "train" once any row is assigned to train, else "all": the fit made before
        `assign_split` ran is stale after it (and refitted on the next run)."""
        ds = lake.table(self.table)
        has_train = "split" in ds.schema.names and ds.count_rows(filter="split = 'train'") > 0
        return "train" if has_train else "all"

    def load_fit(self, fit: Fit, ctx) -> None:
        self.stats = json.loads(fit.files["stats.json"])

    def column_facts(self) -> dict[str, str]:
        """The fit's facts plus which rows its statistics came from (train or all)."""
        facts = super().column_facts()
        if self.fit_state is not None:
            facts["sila.normalize_scope"] = self.stats["scope"]
        return facts

    def compute(self, batch: pa.RecordBatch):
        out = []
        for acts, mask in zip(
            batch["actions"].to_pylist(), batch["action_mask"].to_pylist(), strict=True
        ):
            a = np.asarray(acts, dtype=np.float64).reshape(-1, ACTION_DIM)
            y = normalize(a, self.stats, self.config["method"])
            y[:, ~part_mask_to_dims(mask)] = 0.0
            out.append(y.astype(np.float32).tolist())
        return {"actions_norm": out}
