"""`caption` against the OpenAI TEST DOUBLE (tests/openai_test_server.py) over real HTTP: valid,
invalid, truncated, schema-violating, slow and HTTP-500 answers; a server that dies and is
restarted; failover; gating on filter decisions; --dry-run; API keys kept out of records."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import jsonschema
import pytest
from sila.coordinator.gating import decision_where
from sila.coordinator.ops.dry_run import plan_run
from sila.stages.caption.schema import export, image_schema, video_schema
from sila.stages.caption.stage import Caption

import sila
from sila.endpoints.serve import EndpointActor, EndpointSpec
from tests.stages.caption_helpers import MODEL, make_media, openai_double, stats, write_clips

SERVER = str(Path(__file__).resolve().parents[1] / "openai_test_server.py")
FAST = {"fps": 4.0, "max_frames": 3, "frame_max_side": 64, "concurrency": 8}
QUICK_RETRY = {"retry_budget_s": 20.0, "backoff_s": 0.05, "timeout_s": 5.0}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, bytes]:
    return make_media(tmp_path_factory.mktemp("caption-media"))


def clips_rows(lake) -> list[dict]:
    cols = [f.name for f in Caption.output_fields()]
    rows = lake.table("clips").to_table(columns=["id", *cols]).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


def assert_valid_or_error(rows: list[dict]) -> tuple[int, int]:
    """Every row: schema-valid JSON in caption_json, or a row error and no caption_json."""
    ok = err = 0
    for r in rows:
        if r["caption_error"] is None:
            assert r["caption_json"] is not None, r
            value = json.loads(r["caption_json"])  # raises on invalid JSON
            schema = video_schema() if value.get("segments") is not None else image_schema()
            jsonschema.validate(value, schema)
            assert r["caption_text"] == value["comprehensive_t2i_caption"]
            ok += 1
        else:
            assert r["caption_json"] is None and r["caption_text"] is None
            err += 1
    return ok, err


def test_mixed_answers_leave_only_valid_json_or_row_errors(lake, media):
    write_clips(lake, [media[f"v{i % 3}"] for i in range(24)])
    script = ["valid", "invalid", "truncated", "schema", "500", "valid", "slow", "valid"]
    with openai_double(script=script, slow_s=2.0) as (url, _):
        job = lake.run(
            Caption,
            endpoint_url=url,
            settings={**FAST, **QUICK_RETRY, "timeout_s": 1.0, "max_repairs": 2},
        )
        served = stats(url)
    assert job["state"] == "succeeded"
    rows = clips_rows(lake)
    ok, err = assert_valid_or_error(rows)
    assert ok + err == 24 and ok >= 12  # most rows get through repairs and retries
    assert job["progress"]["row_errors"] == err
    assert set(served["served"]) == set(script)  # every kind of misbehaviour was met
    assert all(r["response_format"] == "json_schema" and r["images"] >= 1 for r in served["recent"])
    repaired = [r for r in rows if (r["caption_calls"] or 0) > 1]
    assert repaired, "no row needed a repair: the script did not reach the stage"
    for r in rows:
        if r["caption_error"]:
            assert "raw answer:" in r["caption_error"], r["caption_error"]


def test_captions_carry_media_facts_and_bad_clips_are_row_errors(lake, media):
    write_clips(lake, [media["v0"], media["still"], media["broken"], None])
    with openai_double() as (url, _):
        job = lake.run(Caption, endpoint_url=url, settings=FAST)
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 2
    video, still, broken, missing = clips_rows(lake)
    assert assert_valid_or_error([video, still, broken, missing]) == (2, 2)
    err = broken["caption_error"]
    assert "could not open" in err and "sila-blobs" not in err  # the reason, not a scratch path
    assert "no video" in missing["caption_error"]
    s = json.loads(still["caption_json"])
    assert "segments" not in s and s["resolution"] == {"H": 64, "W": 96}
    v = json.loads(video["caption_json"])
    assert v["duration"] == 1.0 and v["fps"] == 12.0  # facts from the media, not the model
    assert video["caption_model"] == MODEL and video["caption_frames"] == 3
    assert video["caption_prompt_tokens"] > 0 and video["caption_output_tokens"] > 0
    assert video["caption_prompt_version"].startswith("v1-") and video["caption_latency_s"] > 0
    assert video["caption_calls"] == 1 and still["caption_frames"] == 1


def test_answers_that_stay_bad_become_row_errors_with_the_raw_text(lake, media):
    write_clips(lake, [media["v0"], media["v1"], media["v2"]])
    with openai_double(script=["invalid", "truncated", "schema"]) as (url, _):
        job = lake.run(Caption, endpoint_url=url, settings={**FAST, "max_repairs": 1})
        served = stats(url)
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 3
    assert served["chats"] == 6  # one answer and one repair per row, then give up
    assert any(r["messages"] == 4 for r in served["recent"])  # the repair carries the bad answer
    for r in clips_rows(lake):
        assert r["caption_json"] is None
        assert "no schema-valid JSON after 2 answer(s)" in r["caption_error"]
        assert "raw answer:" in r["caption_error"]


def test_server_dies_and_the_restarted_one_finishes_the_job(lake, media, tmp_path):
    write_clips(lake, [media[f"v{i % 3}"] for i in range(12)])
    spec = EndpointSpec(
        command=[sys.executable, SERVER, "--port", "{port}", "--model", MODEL, "--crash-after",
                 "7", "--quiet"],
        name="caption-crash", startup_timeout_s=30,
    )  # fmt: skip
    actor = EndpointActor(spec, log_dir=str(tmp_path / "logs"), monitor_interval_s=0.2)
    url = actor.start()
    try:
        job = lake.run(Caption, endpoint_url=url, settings={**FAST, **QUICK_RETRY})
        assert actor.restarts() >= 1  # it really died (every 7 requests) and came back
    finally:
        actor.stop()
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0
    assert assert_valid_or_error(clips_rows(lake)) == (12, 0)


def test_failover_to_the_next_endpoint(lake, media):
    write_clips(lake, [media["v0"], media["v1"]])
    with openai_double() as (live, _):
        dead = "http://127.0.0.1:9/v1"  # discard port: nothing listens
        settings = {**FAST, "retry_budget_s": 0.5, "backoff_s": 0.05, "endpoint_urls": [live]}
        job = lake.run(Caption, endpoint_url=dead, settings=settings)
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0


def test_gate_skips_rejected_rows_and_dry_run_counts_calls(lake, media):
    quality = [True, False, None, True, False, True]
    dedup = [True, True, True, False, True, True]
    write_clips(lake, [media["v0"]] * 6, keep={"quality_keep": quality, "dedup_keep": dedup})
    settings = {**FAST, "quadrant_scan": True}
    with openai_double() as (url, _):
        plan = plan_run(lake, Caption, endpoint_url=url, settings=settings)
        assert stats(url)["chats"] == 0  # the dry run made no call
        assert plan.rows == 6 and plan.rows_to_compute == 3 and plan.rows_gated == 3
        assert plan.model_calls == 3 * 6 and plan.model_calls_saved == 3 * 6  # 5 regions + 1
        assert plan.stage_where == "(quality_keep IS NOT FALSE) AND (dedup_keep IS NOT FALSE)"
        job = lake.run(Caption, endpoint_url=url, settings=settings)
        assert stats(url)["chats"] == 3 * 6
    assert job["metrics"]["gating"] == {
        "where": plan.stage_where,
        "rows": 6,
        "rows_gated": 3,
        "model_calls_saved": 18,
    }
    rows = clips_rows(lake)
    for r, q, d in zip(rows, quality, dedup, strict=True):
        rejected = q is False or d is False
        assert (r["caption_json"] is None) == rejected and r["caption_error"] is None
        if not rejected:
            assert r["caption_calls"] == 6
    # all done now, for the same settings (others are another identity: a run would redo them)
    assert plan_run(lake, Caption, endpoint_url=url, settings=settings).rows_to_compute == 0
    assert plan_run(lake, Caption, endpoint_url=url).rows_to_compute == 3


def test_a_filter_never_run_gates_nothing(lake, media):
    write_clips(lake, [media["v0"]] * 2)
    assert decision_where(lake.table("clips").schema, "auto") is None
    assert plan_run(lake, Caption, endpoint_url="http://x/v1").rows_to_compute == 2
    assert plan_run(lake, Caption, settings={"gate": []}).rows_gated == 0


def test_quadrant_scan_merges_region_descriptions(lake, media):
    write_clips(lake, [media["still"]])
    answers = [
        {
            "contains": "the top-left quadrant of a larger",
            "content": {"description": "a red square"},
        },
        {"contains": "the centre region of a larger", "content": {"description": "a clock face"}},
    ]
    with openai_double(answers=answers) as (url, _):
        job = lake.run(Caption, endpoint_url=url, settings={**FAST, "quadrant_scan": True})
        served = stats(url)
    assert job["progress"]["row_errors"] == 0 and served["chats"] == 6
    (row,) = clips_rows(lake)
    scan = json.loads(row["caption_json"])["quadrant_scan"]
    assert scan["top_left"] == "a red square" and scan["absolute_center"] == "a clock face"


def test_api_keys_work_and_stay_out_of_records_and_logs(lake, media, monkeypatch, caplog):
    write_clips(lake, [media["v0"]])
    secret = "sk-test-0123456789abcdef"
    caplog.set_level(logging.DEBUG)
    with openai_double(api_key=secret) as (url, _):
        monkeypatch.setenv("SILA_CAPTION_API_KEY", secret)
        job = lake.run(Caption, endpoint_url=url, settings=FAST)
        assert job["progress"]["row_errors"] == 0
        monkeypatch.delenv("SILA_CAPTION_API_KEY")
        job2 = lake.run(
            Caption, endpoint_url=url, settings={**FAST, "api_key": secret}, recompute=True
        )
        assert job2["state"] == "succeeded" and job2["settings"]["api_key"] == "***"
        with pytest.raises(sila.errors.SilaError, match="401"):
            lake.run(
                Caption, endpoint_url=url, settings={**FAST, "api_key": "wrong"}, recompute=True
            )
    records = "".join(p.read_text() for p in Path(lake.uri).rglob("*.json"))
    assert records and secret not in records
    assert secret not in caplog.text


def test_exported_schemas_match_the_code(tmp_path):
    for p in export(tmp_path):
        shipped = Path(__file__).resolve().parents[2] / "datasets" / p.name
        assert json.loads(shipped.read_text()) == json.loads(p.read_text()), p.name


def test_the_stage_launches_what_infra_documents():
    from sila.stages.caption.stage import CAPTIONER

    from sila.endpoints.serve import load_endpoint_toml

    infra = load_endpoint_toml(Path(__file__).resolve().parents[2] / "infra/vllm/endpoint.toml")
    assert infra.command == CAPTIONER.command and infra.gpus == CAPTIONER.gpus
    limit = json.loads(CAPTIONER.command[CAPTIONER.command.index("--limit-mm-per-prompt") + 1])
    assert limit["image"] >= Caption.settings["max_frames"]


def test_cli_dry_run_prints_rows_and_calls_and_writes_nothing(lake, media):
    from sila.cli.main import app
    from typer.testing import CliRunner

    write_clips(lake, [media["v0"]] * 4, keep={"quality_keep": [True, True, False, True]})
    args = ["run", "caption", "--lake", lake.uri, "--endpoint-url", "http://127.0.0.1:9/v1"]
    out = CliRunner().invoke(app, [*args, "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "rows to compute: 3" in out.output and "model calls: 3" in out.output
    assert "(quality_keep IS NOT FALSE) -> skips 1 rows" in out.output
    assert "model calls saved by the gate: 1" in out.output
    js = CliRunner().invoke(app, [*args, "--dry-run", "--json", "--set", "quadrant_scan=true"])
    plan = json.loads(js.output)["dry_run"]
    assert plan["model_calls"] == 18 and plan["model_calls_saved"] == 6
    assert "caption_json" not in lake.table("clips").schema.names  # nothing was written
    with openai_double() as (url, _):
        real = [*args[:-1], url, "--set", "max_frames=2"]
        out = CliRunner().invoke(app, real)
        assert stats(url)["chats"] == 3
    assert out.exit_code == 0, out.output
    assert "skipped 1 rows, saved 1 model calls" in out.output


def test_operational_settings_keep_captions_a_caption_setting_redoes_them(lake, media):
    write_clips(lake, [media["v0"], media["v1"]])
    with openai_double() as (url, _):
        first = lake.run(Caption, endpoint_url=url, settings=FAST)
        ops = {**FAST, "concurrency": 3, "timeout_s": 9.0, "api_key": "k", "endpoint_urls": [url]}
        again = lake.run(Caption, endpoint_url=url, settings=ops)
        assert stats(url)["chats"] == 2  # a new key, URL list or concurrency recomputes nothing
        changed = lake.run(Caption, endpoint_url=url, settings={**FAST, "max_frames": 2})
        assert stats(url)["chats"] == 4
    assert first["progress"]["rows"] == 2 and again["progress"]["rows"] == 0
    assert changed["progress"]["rows"] == 2
    assert {r["caption_frames"] for r in clips_rows(lake)} == {2}


def test_endpoint_gone_for_good_fails_the_job_then_a_rerun_finishes(lake, media):
    import subprocess

    from sila.endpoints.process import free_port

    write_clips(lake, [media["v0"]] * 8)
    port = free_port()
    cmd = [sys.executable, SERVER, "--port", str(port), "--model", MODEL, "--quiet"]
    dying = subprocess.Popen([*cmd, "--crash-after", "4"])  # nobody restarts it
    url = f"http://127.0.0.1:{port}/v1"
    settings = {**FAST, "retry_budget_s": 1.0, "backoff_s": 0.05, "concurrency": 2}
    try:
        _wait_healthy(url)
        with pytest.raises(sila.errors.SilaError, match="caption endpoint unavailable"):
            lake.run(Caption, endpoint_url=url, settings=settings)
    finally:
        dying.kill()
        dying.wait()
    assert "caption_json" not in lake.table("clips").schema.names  # nothing half-written
    with subprocess.Popen(cmd) as back:
        try:
            _wait_healthy(url)
            job = lake.run(Caption, endpoint_url=url, settings=settings)
        finally:
            back.kill()
    assert job["state"] == "succeeded" and assert_valid_or_error(clips_rows(lake)) == (8, 0)


def _wait_healthy(url: str, timeout_s: float = 20.0) -> None:
    import time

    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url.removesuffix("/v1") + "/health", timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"no test double at {url}")


def test_recipe_endpoints_are_used_without_starting_a_server(lake, media, tmp_path):
    write_clips(lake, [media["v0"]])
    with openai_double() as (url, _):
        recipe = tmp_path / "remote.toml"
        recipe.write_text(f'[stages.caption]\nendpoint_urls = ["{url}"]\nmax_frames = 2\n')
        job = lake.run(Caption, recipe=str(recipe))  # vllm is not installed here: not started
        assert stats(url)["chats"] == 1
    assert job["state"] == "succeeded" and job["progress"]["row_errors"] == 0


def test_parse_valid_refuses_what_is_not_strict_json():
    from sila.stages.caption.client import Unusable, parse_valid, validator_for

    v = validator_for({"type": "object", "properties": {"x": {"type": "number"}}})
    assert parse_valid('```json\n{"x": 1}\n```', "stop", v) == {"x": 1}
    for text, finish, why in [
        ('{"x": NaN}', "stop", "NaN is not valid JSON"),
        ('{"x": 1', "stop", "not valid JSON"),
        ('{"x": 1}', "length", "token limit"),
        ('{"x": "one"}', "stop", "does not match the schema"),
    ]:
        with pytest.raises(Unusable, match=why):
            parse_valid(text, finish, v)
