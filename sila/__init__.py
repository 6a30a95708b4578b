"""SILA: curate raw media into training-ready samples, one wide Lance table per entity.

    import sila
    lake = sila.Lake("./lake")
    lake.ingest(["videos/"])
    lake.run("thumbnail")
"""

import os

# Lance's Rust log warns on every DataReplacement commit ("not stable yet"); keep stderr readable.
os.environ.setdefault("LANCE_LOG", "error")

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


def __getattr__(name: str):
    if name == "stage":  # the decorator lives with the Stage machinery; imported lazily
        from sila.decorator import stage

        return stage
    raise AttributeError(name)
