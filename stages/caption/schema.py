"""The structured caption schemas (image and video) as JSON Schema, built from the field tables
of `CAPTION_SCHEMA.md` (Cosmos 3 report, Appendix A). The caption stage sends them to the
endpoint as `response_format` and validates every answer against them.

`datasets/caption_image_schema.json` and `caption_video_schema.json` are exported copies (a
test keeps them equal) for users who start a custom schema from them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

STR = {"type": "string"}
INT = {"type": "integer", "minimum": 0}
NUM = {"type": "number"}


def _obj(props: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A closed object: every property required except `optional` ones."""
    return {
        "type": "object",
        "properties": props,
        "required": [k for k in props if k not in optional],
        "additionalProperties": False,
    }


def _strings(*names: str) -> dict[str, Any]:
    return {n: STR for n in names}


# Human / count fields apply to some subjects only: optional, so a car needs no `gender`.
_HUMAN = ("clothing", "expression", "gender", "age", "skin_tone_and_texture")
_COUNTS = (
    "number_of_subjects",
    "number_of_arms",
    "number_of_hands",
    "number_of_fingers",
    "number_of_legs",
)
_SUBJECT_BASE = (
    "description",
    "appearance_details",
    "relationship",
    "location",
    "relative_size",
    "orientation",
    "pose",
)
QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right", "absolute_center")


def image_schema() -> dict[str, Any]:
    subject = _obj(
        {**_strings(*_SUBJECT_BASE, *_HUMAN), **{n: INT for n in _COUNTS}},
        optional=_HUMAN + _COUNTS,
    )
    props = {
        "subjects": {"type": "array", "items": subject},
        "subject_details": STR,
        "background_setting": STR,
        "lighting": _obj(_strings("conditions", "direction", "shadows", "illumination_effect")),
        "aesthetics": _obj(_strings("composition", "color_scheme", "mood_atmosphere", "patterns")),
        "cinematography": _obj(
            _strings("framing", "camera_angle", "depth_of_field", "focus", "lens_focal_length")
        ),
        "style_medium": STR,
        "artistic_style": STR,
        "context": STR,
        "text_and_signage_elements": {
            "type": "array",
            "items": _obj(_strings("text", "category", "appearance", "spatial", "context")),
        },
        "quadrant_scan": _obj(_strings(*QUADRANTS)),
        "comprehensive_t2i_caption": {"type": "string", "minLength": 1},
        "resolution": _obj({"H": INT, "W": INT}),
        "aspect_ratio": NUM,
    }
    return {"title": "sila_image_caption", **_obj(props)}


def video_schema() -> dict[str, Any]:
    s = copy.deepcopy(image_schema())
    s["title"] = "sila_video_caption"
    props = s["properties"]
    subject = props["subjects"]["items"]
    for name in ("action", "state_changes"):
        subject["properties"][name] = STR
        subject["required"].append(name)
    cine = props["cinematography"]
    cine["properties"]["camera_motion"] = STR
    cine["required"].append("camera_motion")
    text_item = props["text_and_signage_elements"]["items"]
    text_item["properties"]["spatial_temporal"] = STR
    text_item["required"].append("spatial_temporal")
    extra = {
        "actions": {"type": "array", "items": _obj(_strings("time", "description"))},
        "segments": {
            "type": "array",
            "items": _obj(
                {
                    "segment_index": INT,
                    **_strings("time_range", "description", "key_changes", "camera"),
                }
            ),
        },
        "transitions": {"type": "array", "items": STR},
        "temporal_caption": {"type": "string", "minLength": 1},
        "duration": NUM,
        "fps": NUM,
        "audio_description": STR,
    }
    props.update(extra)
    s["required"] = [k for k in props if k != "audio_description"]  # audio is optional
    return s


REGION_SCHEMA: dict[str, Any] = {
    "title": "sila_region_description",
    **_obj({"description": {"type": "string", "minLength": 1}}),
}

# The field holding the natural-language caption that becomes `caption_text`.
TEXT_FIELD = "comprehensive_t2i_caption"

from sila.recipe import REPO_DATASETS as DATASETS  # noqa: E402


def load_schema(kind_or_path: str) -> dict[str, Any]:
    """'image', 'video' or a path to a JSON Schema file (a custom caption schema)."""
    if kind_or_path == "image":
        return image_schema()
    if kind_or_path == "video":
        return video_schema()
    from sila.errors import SilaError

    try:
        schema = json.loads(Path(kind_or_path).read_text())
    except (OSError, ValueError) as e:
        raise SilaError(
            f"caption schema {kind_or_path!r}: not 'image', 'video' or a readable JSON Schema "
            f"file ({e})"
        ) from e
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise SilaError(
            f"caption schema {kind_or_path}: not a valid JSON Schema: {e.message}"
        ) from None
    return schema


def export(folder: Path = DATASETS) -> list[Path]:
    """Write the built-in schemas as JSON files (`python -m sila.stages.caption.schema`)."""
    out = []
    for kind, schema in (("image", image_schema()), ("video", video_schema())):
        p = folder / f"caption_{kind}_schema.json"
        p.write_text(json.dumps(schema, indent=1) + "\n")
        out.append(p)
    return out


if __name__ == "__main__":
    for p in export():
        print(p)
