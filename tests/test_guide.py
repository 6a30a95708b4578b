"""The guide docs/write-a-stage.md, run exactly as written on a demo-like lake."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import sila
from tests.conftest import BIN

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "write-a-stage.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), re.S)


def test_guide_runs_as_written(tmp_path, corpus):
    lake = sila.Lake(tmp_path / "demo" / "lake").init()  # what `sila demo` leaves, made smaller
    lake.ingest([corpus["_dir"]])
    lake.run("thumbnail")
    stage_code, python_code = blocks("python")
    (tmp_path / "my_stages.py").write_text(stage_code)
    outputs = []
    for line in blocks("bash")[0].strip().splitlines():
        args = shlex.split(line)
        assert args[0] == "sila"
        res = subprocess.run(
            [str(BIN / "sila"), *args[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, f"{line}\n{res.stdout}\n{res.stderr}"
        outputs.append(res.stdout)
    assert "brightness" in outputs[-1] and "aspect" in outputs[-1]
    res = subprocess.run(
        [sys.executable, "-c", python_code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("succeeded 0")  # the CLI already computed everything
    t = lake.table("sources").to_table(
        columns=["media_kind", "brightness", "contrast", "aspect", "thumbnail"]
    )
    for r in t.to_pylist():
        assert (r["brightness"] is not None) == (r["thumbnail"] is not None)
        if r["brightness"] is not None:
            assert 0 <= r["brightness"] <= 255 and r["contrast"] >= 0
        if r["media_kind"] == "video":
            assert abs(r["aspect"] - 16 / 9) < 0.02 or abs(r["aspect"] - 9 / 16) < 0.02

    # editing the code marks the columns stale, and --recompute clears it
    mod = tmp_path / "my_stages.py"
    mod.write_text(stage_code.replace("p.std()", "p.std() + 1"))
    st = lake.status()["tables"]["sources"]["stages"]
    assert st["brightness"]["stale_fragments"] == 1 and st["aspect"]["stale_fragments"] == 0
    res = subprocess.run(
        [str(BIN / "sila"), "run", "my_stages.py:Brightness", "--lake", "demo/lake"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "--recompute" in res.stderr
    res = subprocess.run(
        [str(BIN / "sila"), "status", "--lake", "demo/lake"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "STALE" in res.stdout
    subprocess.run(
        [str(BIN / "sila"), "run", "my_stages.py:Brightness", "--lake", "demo/lake", "--recompute"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert lake.status()["tables"]["sources"]["stages"]["brightness"]["stale_fragments"] == 0
