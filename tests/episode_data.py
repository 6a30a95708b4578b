"""Episode datasets with known truth (the demo uses the same generators)."""

from sila.demo.episodes import (  # noqa: F401
    ego_motion,
    generic_dataset,
    lerobot_v2,
    lerobot_v3,
    rz,
    video,
)
