"""Loading an open_clip model offline: weights from a local path or the standard caches.

Resolution order: the stage's `weights` setting, `$SILA_CLIP_WEIGHTS`, the Hugging Face hub
cache (`$HF_HOME`/`~/.cache/huggingface`), open_clip's own URL cache. Nothing is downloaded
at run time (workers must not race to fetch gigabytes); absent weights raise `WeightsMissing`
naming the fix. Random weights only when the caller allows them, and they say so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from sila.errors import SilaError

log = logging.getLogger(__name__)

WEIGHTS_ENV = "SILA_CLIP_WEIGHTS"
RANDOM_KEY = b"sila.random_weights"
MODEL_KEY = b"sila.model"


class WeightsMissing(SilaError):
    """The model's weights are not on this machine (the message names the fix)."""


@dataclass
class ClipModel:
    model: Any  # open_clip.CLIP
    preprocess: Any  # PIL image -> tensor (the model's own eval transform)
    tokenizer: Any
    name: str
    pretrained: str
    weights: str | None  # the file loaded; None = random
    dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def random(self) -> bool:
        return self.weights is None

    @property
    def identity(self) -> str:
        """What goes into `sila.model`: enough to tell two models' embeddings apart."""
        tag = "RANDOM-WEIGHTS" if self.random else self.pretrained
        return f"open_clip:{self.name}/{tag}"


def register_config(name: str) -> str:
    """`name` may be a path to an open_clip model config (.json): register it, return its name."""
    if not name.endswith(".json"):
        return name
    import open_clip

    if not os.path.isfile(name):
        raise WeightsMissing(f"open_clip model config {name} does not exist")
    open_clip.add_model_config(name)
    return os.path.basename(name).removesuffix(".json")


def fetch_command(name: str, pretrained: str) -> str:
    return (
        'python -c "import open_clip; open_clip.create_model_and_transforms('
        f"'{name}', pretrained='{pretrained}')\""
    )


def find_weights(name: str, pretrained: str, path: str | None = None) -> str | None:
    """A local weights file for (name, pretrained), or None. Never touches the network."""
    path = path or os.environ.get(WEIGHTS_ENV) or None
    if path:
        if not os.path.isfile(path):
            raise WeightsMissing(
                f"open_clip weights file {path} (from the `weights` setting or ${WEIGHTS_ENV}) "
                "does not exist; point it at a downloaded open_clip_model.safetensors / .bin"
            )
        return path
    if not pretrained:  # an architecture without a pretrained tag: a weights file or nothing
        return None
    import open_clip
    from open_clip import pretrained as oc_pretrained

    cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
    if not cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise WeightsMissing(
            f"open_clip has no pretrained tag '{pretrained}' for model '{name}' (known: {known})"
        )
    hub = (cfg.get("hf_hub") or "").strip("/")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, _, sub = hub.partition("/") if hub.count("/") > 1 else (hub, "", "")
        for fname in (oc_pretrained.HF_SAFE_WEIGHTS_NAME, oc_pretrained.HF_WEIGHTS_NAME):
            found = try_to_load_from_cache(repo, f"{sub}/{fname}" if sub else fname)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url") or ""
    if url:
        cache = os.path.expanduser(os.path.join("~", ".cache", "clip"))
        cand = os.path.join(cache, os.path.basename(url))
        if os.path.isfile(cand):
            return cand
    return None


def load_clip(
    name: str,
    pretrained: str,
    *,
    weights: str | None = None,
    allow_random: bool = False,
    device: str = "cpu",
    threads: int = 0,
) -> ClipModel:
    """Load (name, pretrained) from local files; random weights only if `allow_random`."""
    import open_clip
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    name = register_config(name)
    path = find_weights(name, pretrained, weights)
    if path is None and not allow_random:
        raise WeightsMissing(
            f"open_clip weights '{name}/{pretrained}' not found offline (looked in the "
            f"`weights` setting, ${WEIGHTS_ENV}, the Hugging Face cache and ~/.cache/clip). "
            f"Set {WEIGHTS_ENV}=/path/to/open_clip_model.safetensors, or pre-download with: "
            f"{fetch_command(name, pretrained)}  (or run with --allow-random-weights for a "
            "mechanics-only test: the outputs are then marked RANDOM)"
        )
    if path is None:
        log.warning("open_clip %s: RANDOM weights (allowed by --allow-random-weights)", name)
        torch.manual_seed(0)  # the same random model in every worker: embeddings agree
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=path, device=device
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    visual = model.visual
    size = visual.image_size
    size = size[0] if isinstance(size, tuple | list) else int(size)
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    dim = int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else 0
    if not dim:
        dim = int(model.visual.output_dim)
    return ClipModel(model, preprocess, tokenizer, name, pretrained, path, dim, size, mean, std)
