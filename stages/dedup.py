"""`dedup`: semantic deduplication of clips (SemDeDup) as a global stage: fit, then look up.

The fit step (the job driver, `sila.coordinator.global_fit`, before the assign pass) decides
every row, streamed in bounded memory (`sila.retrieval.dedup_fit`): spherical k-means on a
seeded sample of the vectors, every row to its nearest centroid, near-duplicates grouped
inside each cluster (cosine >= 1 - eps), one representative per group chosen by the `quality`
column (highest first, ties by id), plus an eps sweep.
Rows that arrive later are decided by the next fit step (`update`), all together whatever
fragment or worker holds them: each goes to its nearest stored centroid and every cluster that
gained (or lost) a row is regrouped whole, so near-copies that arrive together end in one group
and the answer is the one a fit over all rows with the same centroids gives, in any arrival
order. A retrained fit (`--recompute`) can differ only through its new centroids; `sila dedup
report` says what the current fit's centroids were trained on.
The assign pass only looks rows up in the fit. Filters never delete: `dedup_keep` says which
rows a training set keeps.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sila.retrieval.dedup_fit import Rows, VectorSource, regroup, sample_vectors, scan_rows
from sila.retrieval.semdedup import SWEEP_EPS, choose_clusters, kmeans

from sila.errors import SilaError
from sila.global_stage import Fit, FitContext, GlobalStage
from sila.stage import StageContext

log = logging.getLogger(__name__)


def dedup_outputs(prefix: str) -> list[pa.Field]:
    """The columns a dedup stage named `prefix` writes."""
    return [
        pa.field(f"{prefix}_cluster", pa.int32()),
        pa.field(f"{prefix}_group", pa.string()),  # the id of the group's representative
        pa.field(f"{prefix}_keep", pa.bool_()),
        pa.field(f"{prefix}_of", pa.string()),  # the representative this row duplicates
        pa.field(f"{prefix}_similarity", pa.float32()),  # to it (kept rows: nearest member)
    ]


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _ipc(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().to_pybytes()


def _sweep(per_cluster: np.ndarray, n: int) -> list[dict]:
    removed = per_cluster.sum(axis=0)
    return [
        {"eps": e, "kept": int(n - r), "removed": int(r),
         "removed_fraction": round(int(r) / n, 4) if n else 0.0}
        for e, r in zip(SWEEP_EPS, removed, strict=True)
    ]  # fmt: skip


class Dedup(GlobalStage):
    """Near-duplicate groups of clips by embedding; one representative kept per group."""

    name = "dedup"
    table = "clips"
    vector_column = "embedding"
    inputs = ["id", "embedding"]
    outputs = dedup_outputs("dedup")
    where = "embedding IS NOT NULL"
    version = "3"  # 3: streamed fit; arrivals decided by the fit step, exact under arrival
    model = "semdedup/faiss-kmeans"
    segment_rows = 4096
    settings = {
        "eps": 0.05,  # pairs with cosine similarity >= 1 - eps are duplicates
        "clusters": 0,  # k-means clusters; 0 = about one per 1,000 rows
        "quality": "",  # column ranking a group's members (highest kept); "" = by id only
        "sample_rows": 100_000,  # k-means is trained on a seeded sample of this many rows
        "seed": 0,
    }

    # -- fit: the whole table, streamed -----------------------------------------------------
    def _source(self, lake) -> VectorSource:
        ds = lake.table(self.table)  # one version: every scan of the fit sees the same rows
        quality = str(self.config["quality"]) or None
        if quality and quality not in ds.schema.names:
            raise SilaError(
                f"dedup: quality column '{quality}' is not in table '{self.table}' "
                f"(set `quality` to one of: {', '.join(ds.schema.names)})"
            )
        return VectorSource(ds, self.vector_column, quality)

    def fit(self, lake, ctx: FitContext) -> Fit:
        """Train the centroids on a sample, then group every row (a new lineage)."""
        cfg = self.config
        src = self._source(lake)
        n = src.count()
        if not n:
            raise SilaError(
                f"dedup: no row of '{self.table}' has a '{self.vector_column}' yet; run the stage "
                "that writes it first"
            )
        k = int(cfg["clusters"]) or choose_clusters(n)
        n_sample = min(n, int(cfg["sample_rows"]))
        sample = sample_vectors(src, n, n_sample, int(cfg["seed"]))
        centroids = kmeans(sample, k, seed=int(cfg["seed"]))
        del sample
        rows = scan_rows(src, centroids)
        todo = np.arange(len(centroids))
        groups = regroup(src, rows, todo, float(cfg["eps"]))
        sweep = np.zeros((len(centroids), len(SWEEP_EPS)), np.int64)
        answers = self._answers(rows, groups, np.ones(len(rows.ids), bool), None)
        centroid_fit = {"rows": n, "sample_rows": n_sample}
        return self._fit_of(rows, answers, centroids, sweep, groups, centroid_fit, None)

    def update(self, lake, fit: Fit, ctx: FitContext) -> Fit | None:
        """Decide the rows that arrived (and drop those that left) since `fit`: every cluster
        that changed is regrouped whole. None when nothing changed."""
        p = self.name
        prev = pa.ipc.open_file(pa.py_buffer(fit.files["assignments.arrow"])).read_all()
        centroids = _load_npy(fit.files["centroids.npy"])
        src = self._source(lake)
        stored = {"group": f"{p}_group", "keep": f"{p}_keep", "error": f"{p}_error"}
        rows = scan_rows(src, centroids, prev, stored)
        seen = pc.is_in(prev.column("id"), value_set=pa.array(rows.ids.tolist(), pa.string()))
        left = ~seen.to_numpy(zero_copy_only=False)
        if not rows.arrived.any() and not left.any():
            return None
        prev_cl = prev.column("cluster").to_numpy()
        todo = np.union1d(rows.cluster[rows.arrived], prev_cl[left])
        groups = regroup(src, rows, todo, float(self.config["eps"]))
        answers = self._answers(rows, groups, np.isin(rows.cluster, todo), prev)
        sweep = _load_npy(fit.files["sweep.npy"]).copy()
        sweep[todo] = 0  # a cluster every row left has no group any more
        changed = self._changed(rows, answers)
        lineage = fit.summary.get("lineage") or fit.fit_id
        info = {"arrived": int(rows.arrived.sum()), "left": int(left.sum()),
                "regrouped_clusters": int(len(todo)), "changed_rows": changed,
                "lineage": None if changed else lineage}  # fmt: skip
        log.info("%s: %s", p, info)
        return self._fit_of(rows, answers, centroids, sweep, groups, fit.summary["centroids"], info)

    def _answers(self, rows: Rows, groups, fresh: np.ndarray, prev: pa.Table | None) -> dict:
        """Per row (scan order): group, keep, similarity; `fresh` rows from `groups`, the rest
        carried over from `prev`."""
        n = len(rows.ids)
        group = np.empty(n, object)
        keep = np.zeros(n, bool)
        sim = np.full(n, np.nan, np.float32)
        f = np.flatnonzero(fresh)
        group[f] = rows.ids[groups.rep[f]]
        keep[f] = groups.rep[f] == f
        sim[f] = groups.similarity[f]
        old = np.flatnonzero(~fresh)
        if len(old):
            at = pc.index_in(
                pa.array(rows.ids[old].tolist(), pa.string()), value_set=prev.column("id")
            )
            take = prev.take(at)
            group[old] = np.asarray(take.column("group").to_pylist(), object)
            keep[old] = take.column("keep").to_numpy(zero_copy_only=False)
            sim[old] = take.column("similarity").to_numpy(zero_copy_only=False)
        return {"group": group, "keep": keep, "similarity": sim}

    @staticmethod
    def _changed(rows: Rows, answers: dict) -> int:
        """Rows whose answer in the table differs from the new fit's (a regrouped cluster whose
        representative changed, or a row error): their fragments must be looked up again."""
        st = rows.stored
        if "group" not in st:
            return 0
        has = np.array([g is not None for g in st["group"]], bool)
        differs = has & ((st["group"] != answers["group"]) | (st["keep"] != answers["keep"]))
        if "error" in st:
            differs |= np.array([e is not None for e in st["error"]], bool)
        return int(differs.sum())

    def _fit_of(self, rows, answers, centroids, sweep, groups, centroid_fit, info) -> Fit:
        for c, removed in groups.sweep.items():
            sweep[c] = removed
        n = len(rows.ids)
        table = pa.table(
            {
                "id": pa.array(rows.ids.tolist(), pa.string()),
                "cluster": pa.array(rows.cluster, pa.int32()),
                "group": pa.array(answers["group"].tolist(), pa.string()),
                "keep": pa.array(answers["keep"]),
                "similarity": pa.array(answers["similarity"], pa.float32(), from_pandas=True),
            }
        )
        summary = {
            "rows": int(n),
            "clusters": int(len(centroids)),
            "sample_rows": int(centroid_fit["sample_rows"]),
            "centroids": centroid_fit,  # what k-means was trained on (rows of its fit)
            "eps": float(self.config["eps"]),
            "kept": int(answers["keep"].sum()),
            "removed": int((~answers["keep"]).sum()),
            "sweep": _sweep(sweep, n),
            "column": self.vector_column,
            "quality": str(self.config["quality"]) or None,
            **(info or {}),
        }
        files = {
            "centroids.npy": _npy(centroids),
            "assignments.arrow": _ipc(table),
            "sweep.npy": _npy(sweep),  # removed rows per cluster and eps: regrouping updates it
        }
        return Fit(files, summary)

    def fit_facts(self, lake) -> dict[str, str]:
        """Whether the vectors the fit grouped came from random weights."""
        from sila.column_stamp import column_facts
        from sila.schema import owner

        ds = lake.table(self.table)
        src = column_facts(ds, owner(ds.schema.field(self.vector_column)) or "")
        return {"sila.random_weights": src.get("sila.random_weights", "false")}

    # -- assign: per fragment, a lookup -------------------------------------------------------
    def load_fit(self, fit: Fit, ctx: StageContext) -> None:
        """The fit's answers, by id."""
        self.assigned = pa.ipc.open_file(pa.py_buffer(fit.files["assignments.arrow"])).read_all()
        self.assigned_ids = self.assigned.column("id").combine_chunks()

    def compute(self, batch: pa.RecordBatch) -> pa.Table:
        """Look every row up in the fit (vectorised: a take by id); a row the fit step never
        saw (it arrived during the job) is a row error until the next fit step decides it."""
        p = self.name
        pos = pc.index_in(batch.column("id"), value_set=self.assigned_ids)
        rows = self.assigned.take(pos)  # a null position takes nulls
        keep = rows.column("keep")
        null_str = pa.scalar(None, pa.string())
        missing = f"arrived after fit {self.fit_id}: the next `sila run {p}` groups it"
        cols = {
            f"{p}_cluster": rows.column("cluster"),
            f"{p}_group": rows.column("group"),
            f"{p}_keep": keep,
            f"{p}_of": pc.if_else(keep, null_str, rows.column("group")),
            f"{p}_similarity": rows.column("similarity"),
            f"{p}_error": pc.if_else(pc.is_valid(pos), null_str, pa.scalar(missing)),
        }
        return pa.table(cols, schema=pa.schema(self.output_fields()))


class FingerprintDedup(Dedup):
    """The same grouping on the weight-free `fingerprint_vec` (exact and near-exact copies)."""

    name = "fpdedup"
    vector_column = "fingerprint_vec"
    inputs = ["id", "fingerprint_vec"]
    outputs = dedup_outputs("fpdedup")
    where = "fingerprint_vec IS NOT NULL"
    model = "semdedup/faiss-kmeans on dct-phash"
    settings = {**Dedup.settings, "eps": 0.35}  # bench dedup: P 1.0 R 0.97 at 0.3, P 0.98 at 0.5
