"""`tag`: zero-shot tags of each clip against a hierarchical taxonomy (datasets/taxonomy*.toml).

Reads the clip's `embedding` (so tags and search use one model, and no frame is decoded
twice) and compares it with text vectors of each label's prompts from the same CLIP model.
Labels are paths ("scene/outdoor/road"); siblings compete in a softmax, and a child's score
is its parent's times its own among its siblings. Tags are the labels scoring at least
`threshold` (their parents included). With random weights the tags mean nothing, and the
columns say so (`sila.random_weights=true`).
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from sila.stages.clip_model import ClipModel, OpenClip
from sila.stages.embed import DEFAULT_MODEL, DEFAULT_PRETRAINED

from sila.errors import ContractError, SilaError
from sila.recipe import REPO_DATASETS
from sila.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

SCORE = pa.struct([("label", pa.string()), ("score", pa.float32())])


@dataclass
class Taxonomy:
    labels: list[str]
    prompts: dict[str, list[str]]

    def parent(self, label: str) -> str | None:
        head = label.rsplit("/", 1)[0] if "/" in label else None
        return head if head in self.prompts else None

    def sibling_groups(self) -> list[list[int]]:
        groups: dict[str, list[int]] = {}
        for i, lab in enumerate(self.labels):
            groups.setdefault(lab.rsplit("/", 1)[0] if "/" in lab else "", []).append(i)
        return list(groups.values())


def load_taxonomy(name_or_path: str) -> Taxonomy:
    p = Path(name_or_path)
    for cand in (p, Path("datasets") / p, REPO_DATASETS / p, REPO_DATASETS / f"{p}.toml"):
        if cand.is_file():
            break
    else:
        raise SilaError(
            f"tag: taxonomy '{name_or_path}' not found (a .toml path or a name in datasets/)"
        )
    doc = tomllib.loads(cand.read_text())
    labels = doc.get("labels", {})
    if not labels:
        raise SilaError(f'tag: taxonomy {cand} has no [labels."..."] tables')
    prompts = {}
    for lab, spec in labels.items():
        ps = spec.get("prompts") or [lab.rsplit("/", 1)[-1].replace("_", " ")]
        prompts[lab] = [str(x) for x in ps]
    return Taxonomy(sorted(prompts), prompts)


def hierarchical_scores(sims: np.ndarray, tax: Taxonomy, scale: float) -> np.ndarray:
    """(rows, labels) cosine similarities -> per-label scores, children x their parents."""
    local = np.zeros_like(sims)
    for g in tax.sibling_groups():
        z = sims[:, g] * scale
        z = np.exp(z - z.max(axis=1, keepdims=True))
        local[:, g] = z / z.sum(axis=1, keepdims=True)
    out = local.copy()
    index = {lab: i for i, lab in enumerate(tax.labels)}
    for i, lab in sorted(enumerate(tax.labels), key=lambda x: x[1].count("/")):
        par = tax.parent(lab)
        if par is not None:
            out[:, i] = local[:, i] * out[:, index[par]]
    return out


class Tag(Stage):
    """Zero-shot taxonomy tags from the clip embedding and CLIP text prompts."""

    name = "tag"
    table = "clips"
    inputs = ["embedding"]
    outputs = [pa.field("tags", pa.list_(pa.string())), pa.field("tag_scores", pa.list_(SCORE))]
    where = "embedding IS NOT NULL"
    version = "1"
    model = f"open_clip:{DEFAULT_MODEL}/{DEFAULT_PRETRAINED}"
    segment_rows = 1024
    compute_resources = Resources(cpus=1, gpus=1)  # the text tower encodes every label's prompts
    settings = {
        "taxonomy": "taxonomy",
        "threshold": 0.3,  # a label is a tag when its (hierarchical) score reaches this
        "top_k": 5,  # tag_scores keeps this many labels, best first
        "model": DEFAULT_MODEL,
        "pretrained": DEFAULT_PRETRAINED,
        "weights": "",
    }

    def __init__(self, **overrides) -> None:
        super().__init__(**overrides)
        cfg = self.config
        self.spec = OpenClip(str(cfg["model"]), str(cfg["pretrained"]), cfg["weights"] or None)
        self.clip: ClipModel | None = None

    def setup(self, ctx: StageContext) -> None:
        import torch

        self.tax = load_taxonomy(str(self.config["taxonomy"]))
        clip = self.clip = self.spec.load(ctx.device, ctx.allow_random_weights)
        emb = ctx.facts.get("embed", {})
        if emb.get("sila.model") and emb["sila.model"] != clip.identity:
            raise ContractError(
                f"tag: the clips' embeddings were made by {emb['sila.model']} but tag loads "
                f"{clip.identity}; set tag's model/pretrained/weights to the embed stage's"
            )
        with torch.inference_mode():
            vecs = []
            for lab in self.tax.labels:
                tokens = clip.tokenizer(self.tax.prompts[lab]).to(ctx.device)
                t = torch.nn.functional.normalize(clip.model.encode_text(tokens).float(), dim=-1)
                vecs.append(torch.nn.functional.normalize(t.mean(0), dim=0).cpu().numpy())
            self.scale = (
                float(clip.model.logit_scale.exp()) if hasattr(clip.model, "logit_scale") else 100.0
            )
        self.label_vecs = np.stack(vecs).astype(np.float32)

    def column_facts(self) -> dict[str, str]:
        """The model setup loaded and the taxonomy the tags come from."""
        if self.clip is None:
            return {}
        return {**self.spec.facts(), "sila.taxonomy": str(self.config["taxonomy"])}

    def model_identity(self) -> str:
        """The weights this run will load (found without loading them), or RANDOM."""
        return self.spec.work_identity()

    def compute(self, batch: pa.RecordBatch) -> dict[str, list]:
        col = batch.column("embedding")
        e = col.flatten().to_numpy().reshape(-1, col.type.list_size).astype(np.float32)
        scores = hierarchical_scores(e @ self.label_vecs.T, self.tax, self.scale)
        thr, k = float(self.config["threshold"]), int(self.config["top_k"])
        tags, tops = [], []
        for row in scores:
            chosen = {self.tax.labels[i] for i in np.flatnonzero(row >= thr)}
            for lab in list(chosen):  # a tag implies its ancestors
                while (lab := self.tax.parent(lab)) is not None:
                    chosen.add(lab)
            tags.append(sorted(chosen))
            best = np.argsort(-row, kind="stable")[:k]
            tops.append([{"label": self.tax.labels[i], "score": float(row[i])} for i in best])
        return {"tags": tags, "tag_scores": tops}
