"""SILA: curate raw media into training-ready samples, one wide Lance table per entity.

import sila
lake = sila.Lake("./lake")
lake.ingest(["videos/"])
lake.run("thumbnail")
"""

import os

# Lance's Rust log warns on every DataReplacement commit ("not stable yet"); keep stderr readable.
# Set before lance loads (it reads this once); a user's own LANCE_LOG wins, and debugging SILA
# (SILA_LOG_LEVEL=debug) keeps Lance's warnings in the log.
os.environ.setdefault(
    "LANCE_LOG", "warn" if os.environ.get("SILA_LOG_LEVEL", "").lower() == "debug" else "error"
)

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
