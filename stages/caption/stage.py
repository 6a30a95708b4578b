"""`caption`: a structured JSON caption per clip from a VLM behind an OpenAI-compatible endpoint.

preprocess (CPU) samples frames (`fps`, capped at `max_frames`) and JPEG-encodes them; compute
sends them with a prompt built from the schema (`caption_schema.py`), asking for
schema-constrained output, with many requests in flight; every answer is parsed and validated,
bad ones are repaired or become row errors that keep the raw text. Only valid JSON ever lands
in `caption_json`. By default rows rejected by the filters that have run (`<filter>_keep` is
false: quality, dedup ...) are skipped: captioning is the expensive step.

The endpoint: the node-local `vllm serve` of `CAPTIONER` (one per GPU node), or an existing
server (`--endpoint-url`, plus `endpoint_urls` for failover).
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sila.stages.caption import frames as frames_mod
from sila.stages.caption.client import EndpointOptions, Endpoints, Usage, ask_json, validator_for
from sila.stages.caption.prompt import (
    MediaFacts,
    caption_messages,
    prompt_version,
    region_messages,
)
from sila.stages.caption.schema import QUADRANTS, REGION_SCHEMA, TEXT_FIELD, load_schema

from sila.endpoints.openai_client import EndpointError, EndpointRejected
from sila.endpoints.process import EndpointSpec
from sila.errors import RowError, SilaError
from sila.stage import Resources, Stage, StageContext

log = logging.getLogger(__name__)

MODEL = "Qwen/Qwen3-VL-8B-Instruct"

# One vLLM server per GPU node (infra/vllm/endpoint.toml holds the same settings for
# `sila endpoint up`). Keep limit_mm_per_prompt's image count >= the stage's `max_frames`.
CAPTIONER = EndpointSpec(
    name="captioner",
    gpus=1,  # = tensor_parallel_size
    startup_timeout_s=1200,  # the first start downloads and loads the weights
    command=[
        "vllm", "serve", MODEL, "--port", "{port}",
        "--served-model-name", "captioner",
        "--host", "127.0.0.1",  # node-local: only this node's workers call it
        "--tensor-parallel-size", "1",
        "--max-model-len", "32768",
        "--gpu-memory-utilization", "0.9",
        "--max-num-seqs", "64",
        "--limit-mm-per-prompt", '{"image": 16, "video": 0}',  # >= max_frames
        "--dtype", "bfloat16",
    ],
)  # fmt: skip


@dataclass
class Prepared:
    sampled: frames_mod.Sampled | None
    error: str | None


class Caption(Stage):
    """Structured JSON captions (schema from CAPTION_SCHEMA.md) of each clip's `video`."""

    name = "caption"
    table = "clips"
    inputs = ["video"]
    outputs = [
        pa.field("caption_json", pa.string()),  # schema-valid JSON, never anything else
        pa.field("caption_text", pa.string()),  # the schema's comprehensive caption
        pa.field("caption_model", pa.string()),  # the model the server says answered
        pa.field("caption_prompt_version", pa.string()),
        pa.field("caption_prompt_tokens", pa.int64()),
        pa.field("caption_output_tokens", pa.int64()),
        pa.field("caption_latency_s", pa.float64()),
        pa.field("caption_calls", pa.int32()),  # model calls for the row, repairs included
        pa.field("caption_frames", pa.int32()),
    ]
    version = "1"
    model = f"{MODEL} (OpenAI-compatible endpoint)"
    segment_rows = 64
    endpoint = CAPTIONER
    compute_resources = Resources(cpus=1)  # the GPU belongs to the endpoint, not the worker
    settings = {
        "fps": 8.0,  # frames sampled per second of clip (the paper's 8 FPS)
        "max_frames": 16,  # cap; longer clips are sampled evenly instead
        "frame_max_side": 640,  # px, long side of each frame sent
        "jpeg_quality": 85,
        "schema": "auto",  # "auto" (video, or image for stills) | "image" | "video" | path.json
        "quadrant_scan": False,  # describe quadrants + centre first, then merge (the paper)
        "temperature": 0.7,
        "max_tokens": 4096,
        "max_repairs": 2,  # repair prompts after an unusable answer, then a row error
        "concurrency": 16,  # requests in flight per endpoint, per worker
        "timeout_s": 300.0,  # per request
        "retry_budget_s": 300.0,  # keep retrying a failing endpoint this long (restarts)
        "backoff_s": 0.5,
        "endpoint_urls": [],  # extra servers, in failover order, after --endpoint-url
        "model": "",  # served model name; "" = the server's first model
        "api_key_env": "SILA_CAPTION_API_KEY",  # env var holding the key of remote endpoints
        "api_key": "",  # or the key itself (recipes only; redacted everywhere)
        "structured": "response_format",  # | "structured_outputs" (vLLM) | "none"
        "extra_body": {},  # merged into every request (e.g. {"top_p": 0.9})
        "gate": "auto",  # "auto": every <filter>_keep column present | [columns] | []
        "raw_chars": 4000,  # raw answer text kept in caption_error for debugging
        "decode_threads": 2,
    }

    # -- the platform's hooks -------------------------------------------------------------------
    # How the endpoint is reached, not what a caption says: a new key, URL or concurrency must
    # not make every caption stale (they stay out of the work identity).
    OPERATIONAL = frozenset(
        {"concurrency", "timeout_s", "retry_budget_s", "backoff_s", "endpoint_urls",
         "api_key_env", "api_key", "raw_chars", "decode_threads"}
    )  # fmt: skip

    def identity_settings(self) -> dict[str, Any]:
        """Every setting but the OPERATIONAL ones: they change how, not what, is captioned."""
        return {k: v for k, v in self.config.items() if k not in self.OPERATIONAL}

    def gate(self) -> str | list[str] | None:
        """Rows worth a model call: the `gate` setting, resolved by the platform on the decision
        columns the table has when the job starts (a filter never run gates nothing)."""
        return self.config["gate"]

    def endpoint_urls(self) -> list[str]:
        """The servers the recipe names (failover order): the platform then starts none."""
        return list(self.config["endpoint_urls"] or [])

    def model_calls_per_row(self) -> int:
        """First-attempt model calls per captioned row (repairs come on top)."""
        return 1 + (len(QUADRANTS) if self.config["quadrant_scan"] else 0)

    # -- setup ----------------------------------------------------------------------------------
    def setup(self, ctx: StageContext) -> None:
        cfg = self.config
        self._schemas = {k: load_schema(k) for k in ("image", "video")}
        if cfg["schema"] != "auto":
            custom = load_schema(str(cfg["schema"]))
            self._schemas = {"image": custom, "video": custom}
        self._validators = {k: validator_for(s) for k, s in self._schemas.items()}
        self._region_validator = validator_for(REGION_SCHEMA)
        self._decode_pool = ThreadPoolExecutor(max(1, int(cfg["decode_threads"])), "sila-frames")
        self.endpoints = None
        if ctx.step not in ("compute", "all"):
            return  # the preprocess pool decodes frames only
        urls = [u for u in [ctx.endpoint_url, *cfg["endpoint_urls"]] if u]
        urls = list(dict.fromkeys(u.rstrip("/") for u in urls))
        if not urls:
            raise SilaError(
                "caption: no endpoint; pass --endpoint-url URL (an OpenAI-compatible server "
                "such as `vllm serve`), list endpoint_urls in the recipe, or install vllm so "
                "the stage launches its own (infra/vllm/)"
            )
        self._key = str(cfg["api_key"] or os.environ.get(str(cfg["api_key_env"]), "")) or None
        self.endpoints = Endpoints(
            EndpointOptions(
                urls=urls,
                api_key=self._key,
                model=str(cfg["model"]) or None,
                timeout_s=float(cfg["timeout_s"]),
                retry_budget_s=float(cfg["retry_budget_s"]),
                backoff_s=float(cfg["backoff_s"]),
                structured=str(cfg["structured"]),
                temperature=float(cfg["temperature"]),
                max_tokens=int(cfg["max_tokens"]),
                extra_body=dict(cfg["extra_body"]),
            )
        )
        try:
            model = self.endpoints.model()  # fail at setup, not on every row
        except EndpointError as e:
            raise SilaError(f"caption: endpoint not usable: {self._scrub(str(e))}") from None
        log.info("caption: %s at %s, %d in flight", model, urls[0], cfg["concurrency"])
        self._pool = ThreadPoolExecutor(max(1, int(cfg["concurrency"])), "sila-caption")

    # -- steps ----------------------------------------------------------------------------------
    def preprocess(self, batch: pa.RecordBatch) -> list[Prepared]:
        paths = batch.column("video").to_pylist()
        return list(self._decode_pool.map(self._sample, paths))

    def _sample(self, path: str | None) -> Prepared:
        if not path:
            return Prepared(None, "the clip has no video (transcode it first)")
        cfg = self.config
        try:
            s = frames_mod.sample(
                path,
                float(cfg["fps"]),
                int(cfg["max_frames"]),
                int(cfg["frame_max_side"]),
                int(cfg["jpeg_quality"]),
                keep_middle=bool(cfg["quadrant_scan"]),
            )
        except RowError as e:
            return Prepared(None, str(e))
        return Prepared(s, None)

    def compute(self, prepared: list[Prepared]) -> dict[str, list]:
        rows = list(self._pool.map(self._caption_row, prepared))
        return {f.name: [r.get(f.name) for r in rows] for f in self.output_fields()}

    def _caption_row(self, p: Prepared) -> dict[str, Any]:
        if p.error is not None:
            return {"caption_error": p.error}
        s = p.sampled
        assert s is not None
        kind = "video" if s.facts.is_video else "image"
        schema, validator = self._schemas[kind], self._validators[kind]
        usage = Usage()
        t0 = time.perf_counter()
        try:
            regions = self._quadrant_scan(s, usage) if self.config["quadrant_scan"] else None
            messages = caption_messages(schema, s.frames, s.facts, regions)
            ans = ask_json(
                self.endpoints, messages, schema, validator, int(self.config["max_repairs"])
            )
        except EndpointRejected as e:
            if e.status in (401, 403, 404):  # a wrong key or model fails every row: stop
                raise SilaError(f"caption: {self._scrub(str(e))}") from None
            return {"caption_error": f"the endpoint refused the request: {self._scrub(str(e))}"}
        usage.add(ans.usage)
        if ans.value is None:
            raw = self._scrub(ans.raw)[: int(self.config["raw_chars"])]
            return {
                "caption_error": f"no schema-valid JSON after {usage.calls} answer(s): "
                f"{ans.problem}; raw answer: {raw}"
            }
        value = with_facts(ans.value, s.facts, regions, schema)
        problems = list(validator.iter_errors(value))
        if problems:  # the facts we write in must fit a custom schema too
            return {"caption_error": f"caption does not fit the schema: {problems[0].message}"}
        return {
            "caption_json": json.dumps(value, ensure_ascii=False, allow_nan=False),
            "caption_text": _text(value),
            "caption_model": usage.model,
            "caption_prompt_version": prompt_version(schema),
            "caption_prompt_tokens": usage.prompt_tokens,
            "caption_output_tokens": usage.output_tokens,
            "caption_latency_s": round(time.perf_counter() - t0, 4),
            "caption_calls": usage.calls,
            "caption_frames": len(s.frames),
        }

    def _quadrant_scan(self, s: frames_mod.Sampled, usage: Usage) -> dict[str, str] | None:
        """Each quadrant and the centre described on its own (sequentially: this row's thread
        is one of the pool's in-flight slots)."""
        assert s.middle is not None
        cfg = self.config
        out = {}
        for region, crop in frames_mod.regions(s.middle).items():
            jpeg = frames_mod.jpeg(crop, int(cfg["frame_max_side"]), int(cfg["jpeg_quality"]))
            ans = ask_json(
                self.endpoints,
                region_messages(region, jpeg),
                REGION_SCHEMA,
                self._region_validator,
                int(cfg["max_repairs"]),
            )
            usage.add(ans.usage)
            out[region] = ans.value["description"] if ans.value else "(no description)"
        return out

    def _scrub(self, text: str) -> str:
        key = getattr(self, "_key", None)
        return text.replace(key, "***") if key else text


def with_facts(
    value: dict[str, Any],
    facts: MediaFacts,
    regions: dict[str, str] | None,
    schema: dict[str, Any],
) -> dict[str, Any]:
    """The caption with what is known without a model written in (resolution, aspect ratio,
    duration, fps, the quadrant scan's own descriptions), where the schema has those fields."""
    props = schema.get("properties", {})
    value = dict(value)
    known: dict[str, Any] = {
        "resolution": {"H": facts.height, "W": facts.width},
        "aspect_ratio": round(facts.width / facts.height, 4) if facts.height else None,
    }
    if facts.is_video:
        known["duration"] = facts.duration_s
        known["fps"] = facts.fps
    if regions:
        known["quadrant_scan"] = dict(regions)
    for k, v in known.items():
        if k in props and v is not None:
            value[k] = v
    return value


def _text(value: dict[str, Any]) -> str | None:
    text = value.get(TEXT_FIELD)
    return text if isinstance(text, str) else None
