"""Semantic search over the lake's own clips table: by text, by a clip's id, or by an image.

The query vector comes from the same CLIP model that wrote the column (read from its
metadata, random weights included, which the answer then says). The index is used when it
exists and is current; otherwise (none, too few rows, stale) the search is exact and says so.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sila.retrieval.index import load_record
from sila.retrieval.maintain import index_status
from sila.retrieval.query import knn, open_lancedb_table, plan_for_filter

from sila.column_stamp import column_facts
from sila.errors import SilaError
from sila.schema import owner

log = logging.getLogger(__name__)

BASE_COLUMNS = ["id", "source_id", "start_s", "end_s"]


@dataclass
class SearchResult:
    query: dict[str, Any]
    results: list[dict[str, Any]]
    exact: bool
    index: str | None
    model: str | None
    random_weights: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _query_model(facts: dict[str, str]):
    """The CLIP model that wrote the column, loaded the same way (random stays random)."""
    from sila.stages.clip_model import load_clip

    name = facts.get("sila.open_clip_model")
    if not name:
        raise SilaError(
            "the embedding column does not record its open_clip model; re-run `sila run embed --recompute`"
        )
    random = facts.get("sila.random_weights") == "true"
    return load_clip(
        name,
        facts.get("sila.open_clip_pretrained", ""),
        weights=facts.get("sila.open_clip_weights") or None,
        allow_random=random,
    )


def text_vector(facts: dict[str, str], text: str) -> np.ndarray:
    import torch

    clip = _query_model(facts)
    with torch.inference_mode():
        v = clip.model.encode_text(clip.tokenizer([text])).float()
        return torch.nn.functional.normalize(v, dim=-1)[0].numpy()


def image_vector(facts: dict[str, str], path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    from sila.stages.embed import center_crop, encode_pixels

    clip = _query_model(facts)
    try:
        img = Image.open(path).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise SilaError(f"--image {path}: not a readable image ({e})") from None
    s = clip.image_size / min(img.size)
    img = img.resize(
        (max(clip.image_size, round(img.width * s)), max(clip.image_size, round(img.height * s))),
        Image.BICUBIC,
    )
    px = center_crop(np.asarray(img), clip.image_size)[None]
    return encode_pixels(clip, px, 1, "cpu")[0]


def row_vector(lake, table: str, column: str, row_id: str) -> np.ndarray:
    ds = lake.table(table)
    safe = row_id.replace("'", "''")
    t = ds.to_table(columns=[column], filter=f"id = '{safe}'")
    if not t.num_rows:
        raise SilaError(f"--like {row_id}: no row of '{table}' has that id")
    v = t.column(column)[0]
    if not v.is_valid:
        raise SilaError(f"--like {row_id}: that row has no {column} (see its embed_error)")
    return np.asarray(v.values.to_numpy(), np.float32)


def search(
    lake,
    text: str | None = None,
    *,
    like: str | None = None,
    image: str | None = None,
    vector: np.ndarray | None = None,
    k: int = 10,
    where: str | None = None,
    columns: list[str] | None = None,
    table: str = "clips",
    column: str = "embedding",
) -> SearchResult:
    """The `k` clips nearest to the query; exactly one of text / like / image / vector."""
    given = [x is not None for x in (text, like, image, vector)]
    if sum(given) != 1:
        raise SilaError("search: give exactly one of TEXT, --like CLIP_ID, --image FILE")
    ds = lake.table(table)
    if column not in ds.schema.names:
        raise SilaError(f"table '{table}' has no '{column}' column yet: run `sila run embed` first")
    facts = column_facts(ds, owner(ds.schema.field(column)) or "")
    notes: list[str] = []
    random = facts.get("sila.random_weights") == "true"
    if random:
        notes.append(
            "the embeddings were made with RANDOM weights (--allow-random-weights): results test "
            "the mechanics only, their order means nothing"
        )
    if text is not None:
        q, query = text_vector(facts, text), {"text": text}
    elif image is not None:
        q, query = image_vector(facts, image), {"image": image}
    elif like is not None:
        q, query = row_vector(lake, table, column, like), {"like": like}
    else:
        q, query = np.asarray(vector, np.float32), {"vector": True}
    st = index_status(lake, table, column)
    rec = load_record(lake, table, column)
    plan = rec.plan if rec is not None and rec.name and not st.get("stale") else None
    if plan is None:
        notes.append(
            st.get("note")
            or (
                f"index is stale ({st['stale']}): exact search"
                if st.get("stale")
                else "exact search"
            )
        )
    elif st.get("unindexed_rows"):
        notes.append(
            f"{st['unindexed_rows']} rows are not in the index yet (searched exactly; `sila index refresh`)"
        )
    names = set(ds.schema.names)
    want = [c for c in BASE_COLUMNS if c in names] + [
        c for c in (columns or []) if c not in BASE_COLUMNS
    ]
    missing = [c for c in want if c not in names]
    if missing:
        raise SilaError(f"--columns: table '{table}' has no {missing}")
    extra = 1 if like is not None else 0
    tbl = open_lancedb_table(lake, table)
    if plan is not None and where:  # a selective filter probes more partitions
        plan = plan_for_filter(tbl, plan, where)
        notes.append(f"prefilter: {plan.nprobes} of {plan.num_partitions} partitions probed")
    res = knn(tbl, column, q, k + extra, plan, where=where, columns=want)
    rows = []
    for r in res.to_pylist():
        if like is not None and r.get("id") == like:
            continue
        d = r.pop("_distance", None)
        rows.append({"score": None if d is None else round(1.0 - float(d), 4), **r})
    return SearchResult(
        query,
        rows[:k],
        plan is None,
        rec.name if plan is not None else None,
        facts.get("sila.model"),
        random,
        notes,
    )
