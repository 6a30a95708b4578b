"""`sila view` served for real and driven by headless Chromium (Debian's package, through
playwright): every page renders its content, and a clip actually plays in the browser."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHART = "[data-testid='stVegaLiteChart']"
DONE = (  # the page's script has finished its run and every element's code has loaded
    "() => document.querySelector('[data-testid=stApp]')"
    "?.getAttribute('data-test-script-state') === 'notRunning'"
    " && !document.querySelector('[data-testid=stSkeleton]')"
)


def chromium() -> str:
    """Debian's chromium: installed here when absent (root + apt), else a clear skip."""
    path = shutil.which("chromium") or CHROMIUM
    if os.path.exists(path):
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            "chromium is not installed and apt-get is unavailable: apt-get install chromium"
        )
    cmd = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium"
    try:
        subprocess.run(cmd, shell=True, check=True, timeout=900, capture_output=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"could not install Debian's chromium ({e}); run: {cmd}")
    path = shutil.which("chromium") or CHROMIUM
    if not os.path.exists(path):
        pytest.skip(f"apt-get installed no chromium binary; run: {cmd}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(view_lake, live_lease):
    port = free_port()
    env = {**os.environ, "LANCE_LOG": "error"}
    proc = subprocess.Popen(
        [str(BIN / "sila"), "view", "--lake", view_lake.uri, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace")
            pytest.fail(f"sila view exited with {proc.returncode}:\n{out}")
        try:
            if requests.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                break
        except requests.RequestException:
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("sila view did not answer /_stcore/health within 90 s")
    yield url, proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    exe = chromium()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=exe,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = Path(os.environ.get("SILA_TEST_ARTEFACTS") or tmp_path_factory.mktemp("viewer-screens"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nviewer screenshots: {out}")
    return out


def test_server_binds_loopback_only(server):
    import psutil

    _, proc = server
    listening = [
        c.laddr.ip
        for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening and set(listening) == {"127.0.0.1"}


def _open(browser, url: str, heading: str, shots: Path, name: str):
    # tall: streamlit scrolls inside its own container, so a full-page shot shows one viewport
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(url, wait_until="domcontentloaded", timeout=90_000)
    page.get_by_role("heading", name=heading).first.wait_for(timeout=90_000)
    page.wait_for_function(DONE, timeout=60_000)
    return page


def _shot(page, shots: Path, name: str) -> Path:
    page.wait_for_function(  # pictures arrive after the page: shoot once they are all drawn
        "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=30_000
    )
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot {path}")
    return path


def test_every_page_renders_its_content(server, browser, shots, view_lake):
    url, _ = server
    st = view_lake.status()
    page = _open(browser, f"{url}/", "Overview", shots, "overview")
    page.get_by_text("Live leases and recent jobs").wait_for(timeout=30_000)
    body = page.inner_text("body")
    for name, t in st["tables"].items():
        assert f"{t['rows']:,} rows" in body, name
    assert "Versions over time" in body and "Column coverage" in body
    assert page.locator(CHART).count() >= 3  # stage coverage, versions, columns
    _shot(page, shots, "overview")

    page = _open(browser, f"{url}/samples", "Samples", shots, "samples")
    page.locator("[data-testid='stImage'] img").first.wait_for(timeout=30_000)
    n = view_lake.table("clips").count_rows()
    assert f"of {n:,} matching" in page.inner_text("body")
    pictured = set(
        view_lake.table("sources")
        .to_table(columns=["id"], filter="thumbnail IS NOT NULL")["id"]
        .to_pylist()
    )
    clips = view_lake.table("clips").to_table(columns=["source_id"])["source_id"].to_pylist()
    n = sum(s in pictured for s in clips)  # the audio file's clip has no picture
    try:
        page.wait_for_function(  # one picture per clip: its source's thumbnail
            f"() => document.querySelectorAll(\"[data-testid='stImage'] img\").length >= {n}",
            timeout=30_000,
        )
    except Exception:
        _shot(page, shots, "FAILED-samples")
        print(page.inner_text("body"))
        raise
    _shot(page, shots, "samples")

    page = _open(browser, f"{url}/duplicates", "Duplicates", shots, "duplicates")
    assert "groups with more than one member" in page.inner_text("body")
    assert "kept" in page.inner_text("body") and "duplicate" in page.inner_text("body")
    _shot(page, shots, "duplicates")

    page = _open(browser, f"{url}/distributions", "Distributions", shots, "distributions")
    page.get_by_text("Embedding map (PCA of a sample)").wait_for(timeout=30_000)
    page.wait_for_function(
        f"() => document.querySelectorAll({CHART!r}).length >= 6", timeout=30_000
    )
    assert "samples by short side" in page.inner_text("body")
    _shot(page, shots, "distributions")

    # "more like this" from a clip, through the real retrieval API (exact search here)
    like = view_lake.table("clips").to_table(columns=["id"], filter="clip_index = 0", limit=1)
    like = like["id"][0].as_py()
    want = view_lake.search(like=like, k=24)
    page = _open(browser, f"{url}/search?like={like}", "Search", shots, "search")
    assert "the search model loads on the first query" in page.inner_text("body")
    page.get_by_role("button", name="search").click()
    page.get_by_text(f"{len(want.results)} results").wait_for(timeout=60_000)
    page.wait_for_function(DONE, timeout=60_000)
    assert page.locator("[data-testid='stImage'] img").count() >= 1
    _shot(page, shots, "search")


def test_sample_page_plays_the_clip(server, browser, shots, view_lake):
    url, _ = server
    clip = view_lake.table("clips").to_table(columns=["id"], filter="clip_index = 1", limit=1)
    cid = clip["id"][0].as_py()
    page = _open(browser, f"{url}/sample?table=clips&id={cid}", "clips sample", shots, "sample")
    video = page.locator("video").first
    video.wait_for(timeout=30_000)
    page.wait_for_function("() => document.querySelector('video').readyState >= 2", timeout=30_000)
    started = page.evaluate(
        "async () => { const v = document.querySelector('video'); v.muted = true; v.loop = true;"
        " await v.play(); return v.currentTime; }"
    )
    page.wait_for_function(
        f"() => document.querySelector('video').currentTime > {started} + 0.2", timeout=15_000
    )
    assert page.evaluate("() => document.querySelector('video').videoWidth") > 0
    body = page.inner_text("body")
    assert cid in body and "neighbouring clips" in body and "Columns by stage" in body
    _shot(page, shots, "sample")
