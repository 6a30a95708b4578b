"""The `sila` command as a user runs it: real subprocesses, --json output, exit codes."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import BIN


def sila(*args, lake=None, check=True):
    cmd = [str(BIN / "sila"), *map(str, args)]
    if lake is not None:
        cmd += ["--lake", str(lake)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def js(*args, lake=None):
    return json.loads(sila(*args, "--json", lake=lake).stdout)


def test_cli_end_to_end(tmp_path, corpus):
    lake = tmp_path / "lake"
    assert js("init", lake=lake)["ok"]
    ing = js("ingest", corpus["_dir"], lake=lake)
    assert ing["added"] >= 10 and ing["failed"] >= 2
    assert js("ingest", corpus["_dir"], lake=lake)["added"] == 0

    first = js("run", "thumbnail", lake=lake)
    assert first["state"] == "succeeded" and first["progress"]["fragments_done"] == 1
    second = sila("run", "thumbnail", lake=lake)
    assert "nothing to do" in second.stdout

    st = js("status", lake=lake)
    th = st["tables"]["sources"]["stages"]["thumbnail"]
    # audio rows are outside thumbnail's where: not errors
    assert (th["fragments_done"], th["fragments_pending"], th["errors"]) == (1, 0, 0)
    assert set(st["tables"]["sources"]) >= {"rows", "fragments", "stages"}

    q = js("sql", "select media_kind, count(*) as n from sources group by 1 order by 1", lake=lake)
    kinds = {r["media_kind"]: r["n"] for r in q["rows"]}
    assert kinds["video"] >= 5 and kinds["audio"] >= 1

    new = tmp_path / "new"
    new.mkdir()
    (new / "late.png").write_bytes(corpus["image_bars.png"].read_bytes()[:-1] + b"\x00")
    js("ingest", new, lake=lake)
    third = js("run", "thumbnail", lake=lake)
    assert third["progress"]["fragments_done"] == 1 and third["progress"]["rows"] == 1


def test_cli_errors_are_messages_with_nonzero_exit(tmp_path):
    lake = tmp_path / "lake"
    res = sila("run", "no-such-stage", lake=lake, check=False)
    assert (
        res.returncode == 1
        and "no stage named 'no-such-stage'" in res.stderr
        and "Traceback" not in res.stderr
    )
    res = sila("run", "thumbnail", lake=lake, check=False)
    assert res.returncode == 1 and "sila ingest" in res.stderr
    res = sila("run", "thumbnail", "--json", lake=lake, check=False)
    assert res.returncode == 1 and json.loads(res.stdout)["ok"] is False
    res = sila("sql", "select * from nowhere", lake=lake, check=False)
    assert res.returncode == 1 and "SQL failed" in res.stderr


def test_cli_stages_lists_builtins():
    out = js("stages")
    names = {s["name"]: s for s in out["stages"]}
    assert names["thumbnail"]["table"] == "sources"
    assert "thumbnail: binary" in names["thumbnail"]["outputs"]
    assert names["thumbnail"]["origin"].startswith("entry point")
