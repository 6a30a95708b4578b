"""open_clip as a `sila.model.Model`: the CLIP family `embed`, `tag` and `sila search` share.

Lookup (the `Model` order): the stage's `weights` setting, `$SILA_CLIP_WEIGHTS`, the Hugging
Face hub cache (`$HF_HOME`/`~/.cache/huggingface`), open_clip's own URL cache (`~/.cache/clip`).
A model name may be a path to an open_clip model config (.json), registered on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sila.model import Model, WeightsMissing

WEIGHTS_ENV = "SILA_CLIP_WEIGHTS"

__all__ = ["WEIGHTS_ENV", "ClipModel", "OpenClip", "WeightsMissing", "load_clip", "register_config"]


def register_config(name: str) -> str:
    """`name` may be a path to an open_clip model config (.json): register it, return its name."""
    if not name.endswith(".json"):
        return name
    import open_clip

    if not os.path.isfile(name):
        raise WeightsMissing(f"open_clip model config {name} does not exist")
    open_clip.add_model_config(name)
    return os.path.basename(name).removesuffix(".json")


@dataclass
class ClipModel:
    """A loaded open_clip model with what callers need to feed it."""

    model: Any  # open_clip.CLIP
    preprocess: Any  # PIL image -> tensor (the model's own eval transform)
    tokenizer: Any
    dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    spec: OpenClip  # identity, weights file, random flag

    @property
    def random(self) -> bool:
        """Whether the weights are random (allowed by --allow-random-weights)."""
        return self.spec.random

    @property
    def weights(self) -> str | None:
        """The weights file loaded; None for random weights."""
        return self.spec.path

    @property
    def identity(self) -> str:
        """What goes into `sila.model`: ``open_clip:<model>/<pretrained or RANDOM-WEIGHTS>``."""
        return self.spec.identity


def _caches_hold_anything() -> bool:
    """Whether the hub cache holds any model or open_clip's URL cache any file (two listings):
    when neither does, no weights can be found there and open_clip (torch) need not load."""
    from huggingface_hub import constants

    hub, clip = constants.HF_HUB_CACHE, os.path.expanduser("~/.cache/clip")
    models = os.path.isdir(hub) and any(e.startswith("models--") for e in os.listdir(hub))
    return models or (os.path.isdir(clip) and bool(os.listdir(clip)))


@dataclass
class OpenClip(Model):
    """An open_clip architecture (`name`) with a pretrained tag (`tag`, may be "")."""

    threads: int = 0  # torch CPU threads; 0 = torch's choice
    config: str | None = field(default=None, init=False)  # the .json the name came from

    family = "open_clip"
    weights_env = WEIGHTS_ENV

    def __post_init__(self) -> None:
        if self.name.endswith(".json"):
            self.config, self.name = self.name, os.path.basename(self.name).removesuffix(".json")

    def architecture(self) -> str:
        """The model name open_clip knows (a .json config is registered first)."""
        return register_config(self.config) if self.config else self.name

    def fetch_hint(self) -> str:
        """Where to put weights, and the command that caches them."""
        return (
            f"Set {WEIGHTS_ENV}=/path/to/open_clip_model.safetensors, or pre-download with: "
            'python -c "import open_clip; open_clip.create_model_and_transforms('
            f"'{self.name}', pretrained='{self.tag}')\""
        )

    def cached_weights(self) -> str | None:
        """The Hugging Face hub cache, then open_clip's URL cache; never the network."""
        if not self.tag:  # an architecture without a pretrained tag: a weights file or nothing
            return None
        if not _caches_hold_anything():  # nothing to find: judge without importing torch
            return None
        import open_clip
        from open_clip import pretrained as oc_pretrained

        name = self.architecture()
        cfg = open_clip.get_pretrained_cfg(name, self.tag) or {}
        if not cfg:
            known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise WeightsMissing(
                f"open_clip has no pretrained tag '{self.tag}' for model '{name}' (known: {known})"
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
        cand = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        return cand if url and os.path.isfile(cand) else None

    def build(self, path: str | None, device: str) -> ClipModel:
        """open_clip's model, eval transform and tokenizer, on `device`."""
        import open_clip
        import torch

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        if path is None:
            torch.manual_seed(0)  # the same random model in every worker: embeddings agree
        name = self.architecture()
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=path, device=device
        )
        model.eval()
        visual = model.visual
        size = visual.image_size
        size = size[0] if isinstance(size, tuple | list) else int(size)
        mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        dim = int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else 0
        tokenizer = open_clip.get_tokenizer(name)
        return ClipModel(
            model, preprocess, tokenizer, dim or int(visual.output_dim), size, mean, std, self
        )

    def input_size(self) -> int:
        """The image tower's input size, from the model config (no weights loaded)."""
        import open_clip

        from sila.errors import ContractError

        cfg = open_clip.get_model_config(self.architecture())
        if cfg is None:
            raise ContractError(f"open_clip has no model '{self.name}'")
        size = cfg["vision_cfg"].get("image_size", 224)
        return size[0] if isinstance(size, list | tuple) else int(size)

    def facts(self) -> dict[str, str]:
        """The `Model` facts plus how `sila search` loads the same model for queries."""
        return {
            **super().facts(),
            "sila.open_clip_model": self.config or self.name,
            "sila.open_clip_pretrained": self.tag,
            "sila.open_clip_weights": self.path or "",
        }


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
    return OpenClip(name, pretrained, weights, threads=threads).load(device, allow_random)
