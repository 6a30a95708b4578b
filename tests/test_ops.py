"""Operating SILA: `sila pipeline run`, job records, `sila doctor`, hooks, remove/gc, the skill.

The pipeline here is three user stages on a numeric table (fast), with a real dependency chain:
`double` reads x, `plus` reads double's output, `flag` runs only where plus > 50 (a where-only
dependency)."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import time

import pyarrow as pa
import pytest
from sila.coordinator.ops.pipeline import plan

import sila
from tests.conftest import BIN, make_numbers

STAGES = """
import os, time
import pyarrow as pa
import pyarrow.compute as pc
import sila

SLOW = float(os.environ.get("OPS_SLOW", "0"))

class Double(sila.Stage):
    name = "double"; table = "nums"; inputs = ["x"]; version = "1"; segment_rows = 20
    outputs = [pa.field("double", pa.float64())]
    def compute(self, batch):
        time.sleep(SLOW)
        return {"double": pc.multiply(batch["x"], 2)}

class Plus(sila.Stage):
    name = "plus"; table = "nums"; inputs = ["double"]; version = "1"; segment_rows = 20
    outputs = [pa.field("plus", pa.float64())]
    settings = {"add": 1.0}
    def compute(self, batch):
        time.sleep(SLOW)
        return {"plus": pc.add(batch["double"], self.config["add"])}

class Model(sila.Stage):
    name = "model"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("score", pa.float64())]
    def setup(self, ctx):
        if os.path.exists(os.environ.get("OPS_BREAK", "/nonexistent")):
            raise RuntimeError("model weights missing: put them in place and run again")
    def compute(self, batch):
        return {"score": pc.multiply(batch["x"], 0.5)}

class Flaky(sila.Stage):
    name = "flaky"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("flaky", pa.float64())]
    def compute(self, batch):  # a transient crash on some rows (isolated row by row)
        broken = os.path.exists(os.environ.get("OPS_BREAK", "/nonexistent"))
        xs = batch["x"].to_pylist()
        if broken and any(int(x) % 10 == 0 for x in xs):
            raise RuntimeError("decoder hiccup")
        return {"flaky": [x + 1 for x in xs]}

class Flag(sila.Stage):
    name = "flag"; table = "nums"; inputs = ["x"]; where = "plus > 50"; version = "1"
    outputs = [pa.field("flag", pa.string())]
    def compute(self, batch):
        if os.path.exists(os.environ.get("OPS_BREAK", "/nonexistent")):
            raise RuntimeError("flag model not loaded")
        return {"flag": [f"big{int(x)}" for x in batch["x"].to_pylist()]}
"""


@pytest.fixture
def ops(tmp_path):
    code = tmp_path / "ops_stages.py"
    code.write_text(STAGES)
    recipe = tmp_path / "ops.toml"
    # listed out of order on purpose: the order comes from the data dependencies
    recipe.write_text(
        "[pipeline]\n"
        f'stages = ["{code}:Flag", "{code}:Plus", "{code}:Double"]\n'
        "[stages.plus]\nadd = 1.0\n"
    )
    return code, recipe


def _lake(tmp_path, name: str) -> sila.Lake:
    lk = sila.Lake(tmp_path / name).init()
    make_numbers(lk, fragments=4, rows_per_fragment=40)
    return lk


def _table(lk: sila.Lake) -> pa.Table:
    t = lk.table("nums").to_table()
    return t.select(sorted(t.schema.names)).sort_by("id")


def _sila(*args, env=None, check=True) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [str(BIN / "sila"), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_order_comes_from_inputs_and_where(ops):
    code, _ = ops
    nodes = plan([f"{code}:Flag", f"{code}:Plus", f"{code}:Double"])
    assert [n.name for n in nodes] == ["double", "plus", "flag"]
    assert nodes[2].why == {"plus": "nums.plus"}  # where-only dependency found in the SQL
    # built-ins: transcode reads split's child columns and table
    names = [n.name for n in plan(["transcode", "thumbnail", "split"])]
    assert names.index("split") < names.index("transcode")


def test_pipeline_equals_stages_run_by_hand_and_resumes(tmp_path, ops):
    code, recipe = ops
    by_hand, piped = _lake(tmp_path, "hand"), _lake(tmp_path, "pipe")
    for cls in ("Double", "Plus", "Flag"):
        assert by_hand.run(f"{code}:{cls}", recipe=str(recipe))["state"] == "succeeded"
    res = json.loads(_sila("pipeline", "run", recipe, "--lake", piped.uri, "--json").stdout)
    assert res["ok"] and [s["stage"] for s in res["stages"]] == ["double", "plus", "flag"]
    assert _table(piped).equals(_table(by_hand))
    flagged = piped.sql("select count(*) as n from nums where flag is not null")["n"][0].as_py()
    assert flagged == sum(1 for x in range(160) if 2 * x + 1 > 50)
    again = json.loads(_sila("pipeline", "run", recipe, "--lake", piped.uri, "--json").stdout)
    assert sum(s["rows"] for s in again["stages"]) == 0  # nothing missing: nothing computed
    until = piped.pipeline(str(recipe), until="plus")
    assert [s["stage"] for s in until["stages"]] == ["double", "plus"]


@pytest.mark.slow
def test_pipeline_killed_at_random_moments_then_rerun_gives_the_same_table(tmp_path, ops):
    code, recipe = ops
    ref = _lake(tmp_path, "ref")
    ref.pipeline(str(recipe), concurrent=False)
    rng = random.Random(7)
    for trial in range(2):
        lk = _lake(tmp_path, f"kill{trial}")
        env = {**os.environ, "OPS_SLOW": "0.15"}
        for _ in range(2):
            p = subprocess.Popen(
                [str(BIN / "sila"), "pipeline", "run", str(recipe), "--lake", lk.uri, "--json"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            time.sleep(rng.uniform(1.5, 4.0))
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        time.sleep(1.0)
        _sila("pipeline", "run", recipe, "--lake", lk.uri, "--json", env={"OPS_SLOW": "0"})
        assert _table(lk).equals(_table(ref))


def test_doctor_finds_each_problem_and_its_fix_works(tmp_path, ops):
    code, recipe = ops
    lk = _lake(tmp_path, "doc")
    broken = tmp_path / "broken"
    env = {"OPS_BREAK": str(broken)}
    lk.pipeline(str(recipe), only=["double"])
    # a killed job: a `sila run` SIGKILLed mid-way leaves a running record and a dead pid
    p = subprocess.Popen(
        [str(BIN / "sila"), "run", f"{code}:Plus", "--lake", lk.uri, "--lease-ttl", "1"],
        env={**os.environ, "OPS_SLOW": "0.5"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(j["stage"] == "plus" for j in lk.jobs()):
        time.sleep(0.2)
    time.sleep(0.5)
    p.kill()
    p.wait()
    # a failed job (the model cannot load) and row errors (a flaky decoder)
    broken.write_text("x")
    failed = _sila("run", f"{code}:Model", "--lake", lk.uri, env=env, check=False)
    assert failed.returncode == 1 and "model weights missing" in failed.stderr + failed.stdout
    _sila("run", f"{code}:Flaky", "--lake", lk.uri, env=env)
    # a stale column: double's code changes (its version is bumped)
    (tmp_path / "ops_stages.py").write_text(
        STAGES.replace(
            'name = "double"; table = "nums"; inputs = ["x"]; version = "1"',
            'name = "double"; table = "nums"; inputs = ["x"]; version = "2"',
        )
    )
    res = _sila("doctor", "--lake", lk.uri, "--json", check=False)
    assert res.returncode == 1
    found = json.loads(res.stdout)["findings"]
    kinds = {(f["kind"], f["stage"]) for f in found}
    assert ("dead_job", "plus") in kinds, found
    assert ("stale", "double") in kinds, found
    assert ("failed_job", "model") in kinds and ("row_errors", "flaky") in kinds, found
    model_fix = next(f["fix"] for f in found if f["kind"] == "failed_job")
    assert shlex.split(model_fix)[:3] == ["sila", "run", f"{code}:Model"]
    # run every fix, in the order given, with the model repaired: doctor is then quiet
    broken.unlink()
    for _ in range(6):
        found = json.loads(_sila("doctor", "--lake", lk.uri, "--json", check=False).stdout)
        todo = [f for f in found["findings"] if f["severity"] == "action"]
        if not todo:
            break
        for f in todo:
            _sila(*shlex.split(f["fix"])[1:], env=env)
    final = _sila("doctor", "--lake", lk.uri, "--json", check=False)
    assert final.returncode == 0, final.stdout
    assert not [f for f in json.loads(final.stdout)["findings"] if f["severity"] == "action"]


def test_jobs_show_logs_and_hooks(tmp_path, ops):
    code, recipe = ops
    lk = _lake(tmp_path, "jobs")
    hook_out = tmp_path / "hook.txt"
    _sila(
        "pipeline",
        "run",
        recipe,
        "--lake",
        lk.uri,
        "--on-success",
        f"cp {{record}} {hook_out}",
        "--on-failure",
        "false",
    )
    rec = json.loads(hook_out.read_text())
    assert rec["ok"] and {s["stage"] for s in rec["stages"]} == {"double", "plus", "flag"}
    jobs = json.loads(_sila("jobs", "ls", "--lake", lk.uri, "--json").stdout)["jobs"]
    assert {j["stage"] for j in jobs} == {"double", "plus", "flag"}
    one = json.loads(_sila("jobs", "show", jobs[0]["job"][:22], "--lake", lk.uri, "--json").stdout)
    assert one["job"] == jobs[0]["job"] and one["state"] == "succeeded" and one["argv"]
    human = _sila("jobs", "show", jobs[0]["job"], "--lake", lk.uri).stdout
    assert jobs[0]["stage"] in human and "command:" in human
    _sila("jobs", "logs", jobs[0]["job"], "--lake", lk.uri)
    missing = _sila("jobs", "show", "nope", "--lake", lk.uri, check=False)
    assert missing.returncode == 1 and "no job 'nope'" in missing.stderr + missing.stdout


def test_remove_then_gc_leaves_no_row_of_the_removed_sources(tmp_path):
    lk = sila.Lake(tmp_path / "rm").init()
    blob = {"lance-encoding:blob": "true"}
    src = pa.table(
        {
            "id": ["s1", "s2", "s3"],
            "filename": ["a.mp4", "b.mp4", "c.mp4"],
            "media": pa.array(
                [b"SECRET-A" * 100, b"KEEP-B" * 100, b"KEEP-C" * 100], pa.large_binary()
            ),
        },
        schema=pa.schema(
            [
                ("id", pa.string()),
                ("filename", pa.string()),
                pa.field("media", pa.large_binary(), metadata=blob),
            ]
        ),
    )
    lk.create_table("sources", src)
    dedup = {"sila.stage": "dedup"}
    lk.create_table(
        "clips",
        pa.table(
            {
                "id": ["s1/0-5", "s1/5-9", "s2/0-9"],
                "source_id": ["s1", "s1", "s2"],
                "dedup_of": pa.array([None, None, "s1/0-5"]),  # s2's clip duplicates s1's
            },
            schema=pa.schema(
                [
                    ("id", pa.string()),
                    ("source_id", pa.string()),
                    pa.field("dedup_of", pa.string(), metadata=dedup),
                ]
            ),
        ),
    )
    dry = json.loads(
        _sila("remove", "--where", "filename = 'a.mp4'", "--lake", lk.uri, "--json").stdout
    )
    assert dry["sources"] == 1 and dry["clips"] == 2 and not dry["applied"]
    assert dry["dangling_after"] == {"dedup": 1}  # its representative goes: dedup must rerun
    assert lk.table("sources").count_rows() == 3  # a dry run deletes nothing
    _sila("remove", "--where", "filename = 'a.mp4'", "--lake", lk.uri, "--apply")
    assert lk.table("clips").to_table()["id"].to_pylist() == ["s2/0-9"]
    found = json.loads(_sila("doctor", "--lake", lk.uri, "--json", check=False).stdout)
    (dangling,) = [f for f in found["findings"] if f["kind"] == "dangling"]
    assert dangling["stage"] == "dedup" and "--recompute" in dangling["fix"]
    _sila("gc", "--lake", lk.uri, "--apply", "--older-than", "0")
    assert sorted(lk.table("sources").to_table(columns=["id"])["id"].to_pylist()) == ["s2", "s3"]
    leftovers = [
        p for p in (tmp_path / "rm").rglob("*") if p.is_file() and b"SECRET-A" in p.read_bytes()
    ]
    assert leftovers == []  # no old version, deleted row or blob still holds the bytes


def test_every_command_in_the_agent_skill_runs(tmp_path, ops, corpus):
    code, recipe = ops
    text = _sila("skill").stdout
    assert "sila doctor" in text and "findings" in text
    cmds = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(cmds) >= 8
    lk = sila.Lake(tmp_path / "skill").init()
    lk.ingest([str(p) for name, p in sorted(corpus.items()) if name != "_dir"][:3])
    make_numbers(lk, fragments=2, rows_per_fragment=20)
    for cmd in cmds:
        # the document's recipe is the demo's; here the quick three-stage one stands in for it
        cmd = cmd.replace("pipeline run demo", f"pipeline run {recipe}")
        cmd = cmd.replace("--until split", "--until plus")
        res = subprocess.run(
            cmd.replace("$LAKE", lk.uri),
            shell=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
            timeout=300,
        )
        assert res.returncode == 0, (cmd, res.stdout[-2000:], res.stderr[-2000:])
        if "--json" in cmd:
            json.loads(res.stdout)


def test_compact_refuses_while_a_stage_is_incomplete_then_keeps_the_table(tmp_path, ops):
    code, _ = ops
    lk = _lake(tmp_path, "compact")
    lk.run(f"{code}:Double", where="x < 30")  # a subset: fragments stay partial
    res = _sila("compact", "--lake", lk.uri, check=False)
    assert res.returncode == 1 and "not complete" in res.stderr + res.stdout
    lk.run(f"{code}:Double")
    before = _table(lk)
    _sila("compact", "--lake", lk.uri)
    assert _table(lk).equals(before) and before["double"].null_count == 0
    assert lk.run(f"{code}:Double")["progress"]["rows"] == 0  # still done after compaction


def _tiny_videos(folder, n: int) -> list:
    import imageio_ffmpeg

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"ok{i}.mp4"
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
             f"testsrc=size=64x64:rate=5:duration={i + 1}", "-pix_fmt", "yuv420p", str(p)],
            check=True,
        )  # fmt: skip
        out.append(p)
    return out


def test_doctor_names_files_that_failed_at_ingest_and_the_fix(tmp_path):
    media = tmp_path / "media"
    good = _tiny_videos(media, 3)
    (media / "notes.mp4").write_text("this is not a video")
    (media / "empty.mp4").write_bytes(b"")
    (media / "cut.mp4").write_bytes(good[2].read_bytes()[:300])  # truncated
    lk = sila.Lake(tmp_path / "lake").init()
    rep = lk.ingest([str(media)])
    assert rep.failed == 3
    res = _sila("doctor", "--lake", lk.uri, "--json", check=False)
    assert res.returncode == 1, res.stdout  # not healthy
    (f,) = [f for f in json.loads(res.stdout)["findings"] if f["kind"] == "ingest_failed"]
    assert f["severity"] == "action" and "3 of 6 source file(s) failed at ingest" in f["message"]
    assert {os.path.basename(x["uri"]) for x in f["detail"]["files"]} == {
        "notes.mp4",
        "empty.mp4",
        "cut.mp4",
    }
    assert all(name in f["message"] for name in ("notes.mp4", "empty.mp4", "cut.mp4"))
    human = _sila("doctor", "--lake", lk.uri, check=False).stdout
    assert "cut.mp4" in human and "sila remove" in human
    _sila(*shlex.split(f["fix"])[1:])
    after = json.loads(_sila("doctor", "--lake", lk.uri, "--json", check=False).stdout)
    assert not [f for f in after["findings"] if f["kind"] == "ingest_failed"]
    assert lk.table("sources").count_rows() == 3


VERDICT = """
import pyarrow as pa
import sila

class Odd(sila.Stage):
    name = "odd"; table = "nums"; inputs = ["x"]; version = "1"
    outputs = [pa.field("odd", pa.float64())]
    def process_row(self, row):
        if int(row["x"]) % 10 == 0:
            raise sila.RowError("no picture to judge in this row")
        return {"odd": row["x"] * 1.0}
"""


def test_doctor_advises_retry_only_for_errors_a_retry_can_fix(tmp_path):
    code = tmp_path / "verdict.py"
    code.write_text(VERDICT)
    lk = _lake(tmp_path, "verdict")
    assert lk.run(f"{code}:Odd")["state"] == "succeeded"
    res = _sila("doctor", "--lake", lk.uri, "--json", check=False)
    (f,) = [f for f in json.loads(res.stdout)["findings"] if f["kind"] == "row_errors"]
    # the stage's own verdict on its input: a retry gives it again, so no --retry-errors
    assert f["severity"] == "info" and f["fix"] is None and "retry gives again" in f["message"]
    assert res.returncode == 0, res.stdout
