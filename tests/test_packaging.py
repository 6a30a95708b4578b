"""`pip install .` (a wheel, not an editable install) carries everything the runtime reads and
runs `sila demo` from a folder that is not the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def package_dirs() -> dict[str, Path]:
    """Package name -> source folder, as pyproject.toml maps them."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = conf["package-dir"]
    out = {}
    for pkg in conf["packages"]:
        top = max((p for p in roots if pkg == p or pkg.startswith(p + ".")), key=len)
        rest = pkg[len(top) :].lstrip(".").replace(".", "/")
        out[pkg] = ROOT / roots[top] / rest if rest else ROOT / roots[top]
    return out


def expected_wheel_files() -> set[str]:
    """Every source file of every package (code and data alike), at its path in the wheel."""
    out = set()
    for pkg, folder in package_dirs().items():
        for f in folder.iterdir():
            if f.is_file() and f.suffix != ".pyc" and not f.name.startswith("."):  # editor temps
                out.add(pkg.replace(".", "/") + "/" + f.name)
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the project's own files only (no stale build/, no tests/)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    tops = {Path(d).parts[0] for d in tomllib.loads((ROOT / "pyproject.toml").read_text())
            ["tool"]["setuptools"]["package-dir"].values()}  # fmt: skip
    for top in tops:
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (whl,) = out.glob("sila-*.whl")
    return whl


def test_wheel_holds_every_runtime_file_and_nothing_from_tests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = expected_wheel_files() - names
    assert not missing, f"the wheel lacks {sorted(missing)}: add them to package-data"
    for needed in (
        "sila/py.typed",
        "sila/agent_skill.md",
        "sila/datasets/demo.toml",
        "sila/datasets/quality.toml",
        "sila/datasets/taxonomy.toml",
        "sila/datasets/caption_video_schema.json",
        "sila/datasets/caption_image_schema.json",
        "sila/viewer/app.py",
        "sila/cli/main.py",
    ):
        assert needed in names
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n or "/gen/" in n]
    entry_points = zipfile.ZipFile(wheel).read("sila-0.1.0.dist-info/entry_points.txt").decode()
    assert "sila = sila.cli.main:main" in entry_points and "[sila.stages]" in entry_points


def fresh_venv(tmp: Path, wheel: Path) -> tuple[Path, Path]:
    """A new venv with the wheel installed and the dev venv's dependencies visible through a
    `.pth` line: a directory named in a .pth is added to sys.path without its own .pth files,
    so the dev venv's editable finder for sila is never loaded."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "dev_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return py, site


def clean_env(venv_bin: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SILA_LAKE")}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    env["COLUMNS"] = "200"  # rich wraps at 80 columns without a terminal
    return env


def test_wheel_install_runs_the_demo_outside_the_repo(wheel, tmp_path):
    py, site = fresh_venv(tmp_path, wheel)
    work = tmp_path / "empty"
    work.mkdir()
    env = clean_env(py.parent)
    probe = subprocess.run(
        [str(py), "-c",
         "import json, sila, sila.viewer; from sila.recipe import find_recipe; "
         "print(json.dumps([sila.__file__, sila.viewer.__file__, str(find_recipe('demo'))]))"],
        cwd=work, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    files = [Path(p).resolve() for p in json.loads(probe.stdout)]
    assert all(f.is_relative_to(site.resolve()) for f in files), files  # not the repo's copy
    demo = subprocess.run(
        [str(py.parent / "sila"), "demo", "--small"],
        cwd=work, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out[-4000:]
    assert "demo finished in" in out and "sila status --lake" in out
    assert "sila pipeline run: thumbnail, split, transcode" in out  # demo.toml's [pipeline]
    assert (work / "demo" / "lake").is_dir() and not (work / "datasets").exists()
    jobs = subprocess.run(
        [str(py.parent / "sila"), "jobs", "ls", "--json", "--stage", "thumbnail", "--lake",
         "demo/lake"],
        cwd=work, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    thumb = [j for j in json.loads(jobs.stdout)["jobs"] if j["stage"] == "thumbnail"]
    assert thumb and thumb[0]["settings"]["max_side"] == 320  # the shipped recipe's setting
