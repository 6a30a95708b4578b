"""SILA: curate raw media into training-ready samples, one wide Lance table per entity.

import sila
lake = sila.Lake("./lake")
lake.ingest(["videos/"])
lake.run("thumbnail")
"""

import os

# Lance's Rust log warns on every DataReplacement commit ("not stable yet"); keep stderr readable.
os.environ.setdefault("LANCE_LOG", "error")

# `sila.stage` is the decorator (the module of the same name stays importable as sila.stage
# through `from sila.stage import ...`, which reads sys.modules).
from sila.decorator import stage  # noqa: E402, I001
from sila.errors import (
    ContractError,
    LakeError,
    RowError,
    SilaError,
    StageFailed,
    StaleColumnsError,
)
from sila.lake import Lake
from sila.stage import Emit, Resources, Stage, StageContext

__all__ = [
    "ContractError",
    "Emit",
    "Lake",
    "LakeError",
    "Resources",
    "RowError",
    "SilaError",
    "Stage",
    "StageContext",
    "StageFailed",
    "StaleColumnsError",
    "stage",
]
__version__ = "0.1.0"
