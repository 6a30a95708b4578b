"""`embed`: one L2-normalised CLIP image embedding per clip, mean-pooled over sampled frames.

`preprocess` (CPU) decodes the sampled frames, scaled and centre-cropped to the model's input
size (uint8, so segments stay small between pools); `compute` (a GPU where the cluster has one)
normalises and runs the image tower. The model and pretrained tag come from the recipe (default
ViT-B-32 / laion2b_s34b_b79k, 512-d). Weights load from local files only (see `clip_model`);
missing weights fail the job at setup. With `--allow-random-weights` the columns say
`sila.random_weights=true` and `sila.model=open_clip:<model>/RANDOM-WEIGHTS`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sila.stages.clip_model import ClipModel, OpenClip

from sila.errors import ContractError, RowError
from sila.media import sample_frames
from sila.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


def center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre square of `size` (the frame's short side was already scaled to `size`)."""
    h, w = frame.shape[:2]
    if min(h, w) < size:  # tiny input: pad rather than fail (open_clip pads too)
        pad = np.zeros((max(h, size), max(w, size), frame.shape[2]), frame.dtype)
        pad[:h, :w] = frame
        frame, h, w = pad, pad.shape[0], pad.shape[1]
    y, x = (h - size) // 2, (w - size) // 2
    return frame[y : y + size, x : x + size]


@dataclass
class Prepared:
    pixels: list[np.ndarray | None]  # per row: frames x H x W x 3 uint8
    errors: list[str | None]


def encode_pixels(clip: ClipModel, frames: np.ndarray, batch: int, device: str) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, D) float32 unit vectors from the image tower."""
    import torch

    mean = torch.tensor(clip.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(clip.std, device=device).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[i : i + batch])).to(device)
            x = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            f = clip.model.encode_image(x).float()
            out.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, clip.dim), np.float32)


def pool(frame_vectors: np.ndarray) -> np.ndarray:
    """Mean of unit frame vectors, renormalised: the clip's direction."""
    v = frame_vectors.mean(axis=0)
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


class Embed(Stage):
    """CLIP image embedding of each clip (`embedding`, unit length) for search and dedup."""

    name = "embed"
    table = "clips"
    inputs = ["video"]
    dim = 512  # the declared width; a model with another width needs a subclass (see below)
    outputs = [
        pa.field("embedding", pa.list_(pa.float32(), 512)),
        pa.field("embed_frames", pa.int32()),
    ]
    where = "transcode_error IS NULL AND clip_kind IN ('video', 'image')"  # pictures only
    version = "1"
    model = f"open_clip:{DEFAULT_MODEL}/{DEFAULT_PRETRAINED}"  # the setup records the real one
    segment_rows = 32
    compute_resources = Resources(cpus=1, gpus=1)  # decoding stays in the CPU preprocess pool
    settings = {
        "model": DEFAULT_MODEL,
        "pretrained": DEFAULT_PRETRAINED,
        "weights": "",  # a local weights file; "" = $SILA_CLIP_WEIGHTS, then the caches
        "frames": 8,  # frames sampled per clip, evenly spread ...
        "fps": 0.0,  # ... or this many per second when > 0 (at most 64 per clip)
        "batch_frames": 64,  # frames per forward pass
        "device": "auto",  # auto = the platform's choice (cuda where the step has a GPU)
        "threads": 0,  # torch CPU threads; 0 = torch's choice
    }

    def __init__(self, **overrides) -> None:
        super().__init__(**overrides)
        cfg = self.config
        self.spec = OpenClip(
            str(cfg["model"]), str(cfg["pretrained"]), cfg["weights"] or None,
            threads=int(cfg["threads"]),
        )  # fmt: skip
        self.clip: ClipModel | None = None

    def setup(self, ctx: StageContext) -> None:
        dev = str(self.config["device"])
        self.device = ctx.device if dev == "auto" else dev
        self.image_size = self.spec.input_size()
        if ctx.step == "preprocess":  # the decode pool needs the input size only, no weights
            return
        self.clip = self.spec.load(self.device, ctx.allow_random_weights)
        if self.clip.dim != self.dim:
            raise ContractError(
                f"embed: model {self.spec.name} gives {self.clip.dim}-d embeddings but this "
                f"stage declares {self.dim}; use a stage made by "
                f"`sila.stages.embed.embed_stage('{self.spec.name}', {self.clip.dim})`"
            )

    def column_facts(self) -> dict[str, str]:
        """The model setup loaded (`sila.model`, `sila.random_weights`, the digest) and how
        `sila search` loads the same one for text and image queries."""
        return self.spec.facts() if self.clip is not None else {}

    def model_identity(self) -> str:
        """The weights this run will load (found without loading them), or RANDOM."""
        return self.spec.work_identity()

    def preprocess(self, batch: pa.RecordBatch) -> Prepared:
        cfg = self.config
        pixels, errors = [], []
        for row in batch.to_pylist():
            path = row["video"]
            try:
                if not path:
                    raise RowError("the clip has no video (transcode did not produce one)")
                frames = sample_frames(
                    path, int(cfg["frames"]), float(cfg["fps"]), short_side=self.image_size
                )
                pixels.append(np.stack([center_crop(f, self.image_size) for f in frames]))
                errors.append(None)
            except self.error_policy.row_errors as e:  # the row's answer is its error
                pixels.append(None)
                errors.append(self.row_error_message(e, row))
        return Prepared(pixels, errors)

    def compute(self, prepared: Prepared) -> dict[str, list]:
        assert self.clip is not None, "setup() did not load the model"
        ok = [p for p in prepared.pixels if p is not None]
        vectors = (
            encode_pixels(
                self.clip, np.concatenate(ok), int(self.config["batch_frames"]), self.device
            )
            if ok
            else None
        )
        emb, counts, at = [], [], 0
        for p in prepared.pixels:
            if p is None:
                emb.append(None)
                counts.append(None)
                continue
            emb.append(pool(vectors[at : at + len(p)]))
            counts.append(len(p))
            at += len(p)
        return {"embedding": emb, "embed_frames": counts, "embed_error": prepared.errors}

    def postprocess(self, computed: dict[str, list]) -> dict[str, pa.Array]:
        emb = computed["embedding"]
        flat = np.zeros((len(emb), self.dim), np.float32)
        for i, v in enumerate(emb):
            if v is not None:
                flat[i] = v
        mask = pa.array([v is None for v in emb])
        arr = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), self.dim, mask=mask)
        return {**computed, "embedding": arr}


def embed_stage(model: str, dim: int, pretrained: str = "", name: str = "embed") -> type[Embed]:
    """An `Embed` for a model of another width, e.g. `embed_stage("ViT-L-14", 768, "openai")`.

    Register it in your package's `sila.stages` entry points, or run it as `module:Name`.
    """
    settings = {**Embed.settings, "model": model}
    if pretrained:
        settings["pretrained"] = pretrained
    return type(
        f"Embed_{model.replace('-', '_')}",
        (Embed,),
        {
            "name": name,
            "dim": dim,
            "outputs": [
                pa.field("embedding", pa.list_(pa.float32(), dim)),
                pa.field("embed_frames", pa.int32()),
            ],
            "settings": settings,
            "model": f"open_clip:{model}/{settings['pretrained']}",
        },
    )
