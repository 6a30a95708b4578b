"""`quality`: the video decision, from `video_signals` scores and the recipe's rules.

Thresholds turn scores into tags (``static``, ``dark``, ``blur`` ...), added to the detector
tags of `video_artifacts` (``split_screen``, ``rotated``, ``text_overlay``, ``border``). The
recipe says which tags reject and which only flag; the default is the paper's policy: major
artifacts (static, split screen, rotated) reject, minor ones (text overlay, motion blur,
compression noise) are flagged and kept. SILA adds exposure and size rules of its own. A tag in
neither list is flagged (kept). Every threshold is a setting, so `[stages.quality]` in a recipe
or `--set quality.min_motion=0.5` changes the decision; its version follows the rules, so
re-running it recomputes the decision alone, never the signals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sila.filters import Crossing, Filter, Verdict

# (tag, score column, "min" | "max", setting): tag when the score is below min / above max;
# a setting of 0 turns its rule off.
RULES = [
    ("static", "motion_mean", "min", "min_motion"),
    ("partly_static", "motion_min_patch", "min", "min_motion_patch"),
    ("frozen", "frozen_ratio", "max", "max_frozen_ratio"),
    ("blur", "sharpness", "min", "min_sharpness"),
    ("dark", "brightness", "min", "min_brightness"),
    ("overexposed", "brightness", "max", "max_brightness"),
    ("low_contrast", "contrast", "min", "min_contrast"),
    ("black_frames", "black_ratio", "max", "max_black_ratio"),
    ("blank_frames", "blank_ratio", "max", "max_blank_ratio"),
    ("compression_noise", "blockiness", "max", "max_blockiness"),
    ("too_small", "short_side", "min", "min_short_side"),
    ("too_short", "video_duration_s", "min", "min_duration_s"),
    ("too_long", "video_duration_s", "max", "max_duration_s"),
    ("extreme_aspect", "aspect_ratio_long", "max", "max_aspect"),
    ("low_aesthetic", "aesthetic_score", "min", "min_aesthetic"),
    ("low_technical", "dover_technical", "min", "min_dover_technical"),
]
SCORES = sorted({r[1] for r in RULES} - {"aspect_ratio_long"} | {"aspect"})


class Quality(Filter):
    """Keep or reject each clip for training, with reasons (rejections) and flags (minor)."""

    name = "quality"
    table = "clips"
    inputs = [*SCORES, "video_artifacts", "video_signals_error"]
    flags = True
    logic_version = "1"
    model = "rules"
    settings: dict[str, Any] = {
        "min_motion": 0.25,  # Data-Juicer's Farneback default (px per 0.5 s)
        "min_motion_patch": 0.0,
        "max_frozen_ratio": 0.5,
        "min_sharpness": 60.0,  # variance of the Laplacian at the analysis scale
        "min_brightness": 25.0,
        "max_brightness": 235.0,
        "min_contrast": 6.0,
        "max_black_ratio": 0.5,
        "max_blank_ratio": 0.5,
        "max_blockiness": 0.0,  # blockdetect score; 0 = off until calibrated on your corpus
        "min_short_side": 0.0,
        "min_duration_s": 0.0,
        "max_duration_s": 0.0,
        "max_aspect": 0.0,  # long side / short side
        "min_aesthetic": 0.0,
        "min_dover_technical": 0.0,
        "reject": [
            "static",
            "frozen",
            "split_screen",
            "rotated",
            "dark",
            "overexposed",
            "black_frames",
            "blank_frames",
            "too_small",
            "too_short",
            "too_long",
            "extreme_aspect",
        ],  # fmt: skip
        "flag": [
            "text_overlay",
            "blur",
            "compression_noise",
            "border",
            "partly_static",
            "low_contrast",
            "low_aesthetic",
            "low_technical",
        ],  # fmt: skip
    }

    def crossings(self, row: dict[str, Any]) -> list[Crossing]:
        """The threshold rules of RULES the row's scores cross (a limit of 0 is off)."""
        values = dict(row)
        aspect = row.get("aspect")
        values["aspect_ratio_long"] = max(aspect, 1 / aspect) if aspect else None
        out = []
        for tag, col, kind, setting in RULES:
            limit, value = float(self.config[setting]), values.get(col)
            if not limit or value is None:
                continue
            if (kind == "min" and value < limit) or (kind == "max" and value > limit):
                out.append(Crossing(tag, col, float(value), limit, kind, setting))
        return out

    def tags(self, row: dict[str, Any]) -> list[str]:
        tags = [c.tag for c in self.crossings(row)]
        return tags + [t for t in row.get("video_artifacts") or [] if t not in tags]

    def keep_column(self, table: pa.Table) -> list[bool | None]:
        """`filter`'s keep for every row at once (numpy over the score columns; a null score
        crosses no rule, as in `crossings`)."""

        def values(col: str) -> np.ndarray:
            return pc.fill_null(table.column(col).cast(pa.float64()), np.nan).to_numpy()

        reject = set(self.config["reject"])
        aspect = values("aspect")
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = ~np.isnan(aspect) & (aspect != 0)
            cols = {"aspect_ratio_long": np.where(ok, np.maximum(aspect, 1 / aspect), np.nan)}
        rejected = np.zeros(table.num_rows, dtype=bool)
        for tag, col, kind, setting in RULES:
            limit = float(self.config[setting])
            if tag not in reject or not limit:
                continue
            v = cols[col] if col in cols else values(col)
            rejected |= (v < limit) if kind == "min" else (v > limit)
        arts = table.column("video_artifacts").combine_chunks()
        flat, parent = pc.list_flatten(arts), pc.list_parent_indices(arts).to_numpy()
        rejected[
            parent[pc.is_in(flat, pa.array(sorted(reject))).to_numpy(zero_copy_only=False)]
        ] = True
        keep = (~rejected).astype(object)
        only = pc.fill_null(pc.equal(pc.list_value_length(arts), 1), False).to_numpy(
            zero_copy_only=False
        )
        named = parent[pc.equal(flat, "no_video").to_numpy(zero_copy_only=False)]
        keep[named[only[named]]] = None  # an audio clip: the video rules do not apply
        keep[pc.is_null(arts).to_numpy(zero_copy_only=False)] = False
        err = pc.fill_null(pc.not_equal(table.column("video_signals_error"), ""), False)
        err = err.combine_chunks() if hasattr(err, "combine_chunks") else err
        keep[err.to_numpy(zero_copy_only=False)] = False
        return keep.tolist()

    def filter(self, row: dict[str, Any]) -> Verdict:
        if row.get("video_signals_error"):
            return Verdict(False, ["signals_error"])
        if row.get("video_artifacts") is None:  # video_signals did not run on this row
            return Verdict(False, ["no_signals"])
        if row.get("video_artifacts") == [
            "no_video"
        ]:  # an audio clip: the video rules do not apply
            return Verdict(None, ["no_video"])
        reject = set(self.config["reject"])
        tags = self.tags(row)
        reasons = [t for t in tags if t in reject]
        return Verdict(not reasons, reasons, [t for t in tags if t not in reject])
