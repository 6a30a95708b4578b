"""Prompts of the caption stage: the structured-caption request (frames + field guide), the
quadrant-scan region requests, and the repair prompt after an unusable answer.

`prompt_version(schema)` hashes the templates and the schema, so any change to either shows in
`caption_prompt_version` and in which rows were captioned with what.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sila.endpoints.openai_client import image_part

PROMPT_SERIES = "v1"

SYSTEM = (
    "You are a meticulous visual captioner writing training captions for image and video "
    "generation models. Describe only what is visible (and audible, if told); never guess "
    "names, brands or text you cannot read. Answer with exactly one JSON object that follows "
    "the given JSON schema: every required field, no extra fields, no prose, no markdown."
)

FIELD_GUIDE = {
    "subjects": "one record per salient subject: what it is, appearance, relation to others, "
    "location in frame, relative size, orientation, pose (people: clothing, expression, "
    "apparent gender and age, skin; groups: integer counts)",
    "subject_details": "details that fit no single subject",
    "background_setting": "the scene and background elements",
    "lighting": "conditions, direction, shadows, effect of the light",
    "aesthetics": "composition, colour scheme, mood, patterns",
    "cinematography": "framing, camera angle, depth of field, focus, lens",
    "style_medium": "medium (photo, render, animation ...)",
    "artistic_style": "rendering style",
    "context": "the situation or story",
    "text_and_signage_elements": "each legible text: text, category, appearance, position",
    "quadrant_scan": "what each quadrant and the centre shows",
    "comprehensive_t2i_caption": "a dense natural-language caption distilled from all fields",
    "resolution": "H and W in pixels (given below)",
    "aspect_ratio": "W / H (given below)",
    "actions": "key events in chronological order, with times",
    "segments": "temporal segments: index, time range, description, key changes, camera",
    "transitions": "changes between segments, shots or states",
    "temporal_caption": "a dense description of everything that changes over time",
    "duration": "seconds (given below)",
    "fps": "frames per second of the video (given below)",
    "audio_description": "speech, music, effects, ambience, only if audio is described to you",
}

REGION_NAMES = {
    "top_left": "top-left quadrant",
    "top_right": "top-right quadrant",
    "bottom_left": "bottom-left quadrant",
    "bottom_right": "bottom-right quadrant",
    "absolute_center": "centre region",
}

REGION_TEMPLATE = (
    "This picture is the {region} of a larger frame. Describe everything visible in it "
    "(subjects, their appearance and position, text, background) in two to four sentences. "
    'Answer as JSON: {{"description": "..."}}.'
)

REPAIR_TEMPLATE = (
    "Your previous answer could not be used: {problem}. Answer again with ONE complete JSON "
    "object that satisfies the schema; no text before or after it.{shorter}"
)
SHORTER = " It was cut off by the length limit: write shorter field values."


@dataclass(frozen=True)
class Frame:
    t_s: float  # timestamp in the clip
    jpeg: bytes


@dataclass(frozen=True)
class MediaFacts:
    """What the stage knows about the clip without a model; written into the caption."""

    width: int
    height: int
    duration_s: float | None  # None for a still image
    fps: float | None
    is_video: bool


def prompt_version(schema: dict[str, Any]) -> str:
    text = json.dumps(
        [SYSTEM, FIELD_GUIDE, REGION_TEMPLATE, REPAIR_TEMPLATE, schema], sort_keys=True
    )
    return f"{PROMPT_SERIES}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI `response_format` for schema-constrained decoding (vLLM >= 0.12 maps it to its
    structured outputs; the older `guided_json` field is gone)."""
    name = str(schema.get("title") or "caption")[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _guide(schema: dict[str, Any]) -> str:
    lines = []
    for name in schema.get("properties", {}):
        hint = FIELD_GUIDE.get(name)
        lines.append(f"- {name}: {hint}" if hint else f"- {name}")
    return "\n".join(lines)


def caption_messages(
    schema: dict[str, Any],
    frames: list[Frame],
    facts: MediaFacts,
    regions: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The chat messages asking for one structured caption of `frames`."""
    what = "video clip" if facts.is_video else "image"
    meta = f"Resolution: H={facts.height}, W={facts.width}."
    if facts.is_video:
        meta += (
            f" Duration: {facts.duration_s:.3f} s. Frame rate: {facts.fps or 0:.3f} fps. "
            f"{len(frames)} frames are shown, each after its timestamp."
        )
    text = f"Caption this {what} as one JSON object with these fields:\n{_guide(schema)}\n{meta}"
    if regions:
        scan = "\n".join(f"- {REGION_NAMES[k]}: {v}" for k, v in regions.items())
        text += (
            "\nA quadrant scan described each region independently; merge it into the caption "
            f"(and keep it in quadrant_scan):\n{scan}"
        )
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for f in frames:
        if facts.is_video:
            content.append({"type": "text", "text": f"t={f.t_s:.3f}s"})
        content.append(image_part(f.jpeg))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


def region_messages(region: str, crop_jpeg: bytes) -> list[dict[str, Any]]:
    text = REGION_TEMPLATE.format(region=REGION_NAMES[region])
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [{"type": "text", "text": text}, image_part(crop_jpeg)]},
    ]


def repair_messages(
    messages: list[dict[str, Any]], answer: str, problem: str, truncated: bool, keep: int = 4000
) -> list[dict[str, Any]]:
    """The conversation so far plus the unusable answer (cut to `keep` chars) and a request to
    answer again: the model sees what it got wrong."""
    fix = REPAIR_TEMPLATE.format(problem=problem, shorter=SHORTER if truncated else "")
    return [
        *messages,
        {"role": "assistant", "content": answer[:keep]},
        {"role": "user", "content": fix},
    ]
