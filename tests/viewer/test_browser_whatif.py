"""The What if page in headless Chromium: change a threshold, see the counts and flipped rows,
run the apply command it shows, and find the stored result equal to the prediction."""

from __future__ import annotations

import shlex
import subprocess
import time

import pytest
import requests

import sila
from tests.test_whatif import STAGE
from tests.viewer.test_browser import BIN, DONE, _shot, browser, free_port, shots  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def whatif_server(tmp_path, corpus):
    lake = sila.Lake(tmp_path / "lake").init()
    lake.ingest([p for n, p in corpus.items() if n != "_dir"])
    assert lake.run(STAGE)["state"] == "succeeded"
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "sila"), "view", "--lake", lake.uri, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                break
        except requests.RequestException:
            time.sleep(0.3)
    yield lake, url
    proc.terminate()
    proc.wait(timeout=15)


def test_whatif_in_the_browser_then_apply(whatif_server, browser, shots):  # noqa: F811
    from sila.coordinator.ops.whatif import what_if

    lake, url = whatif_server
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(f"{url}/whatif", wait_until="domcontentloaded", timeout=90_000)
    page.get_by_role("heading", name="What if").first.wait_for(timeout=90_000)
    page.wait_for_function(DONE, timeout=60_000)
    box = page.get_by_label("min_duration_s")
    box.fill("2.5")
    box.press("Enter")
    page.get_by_text("rows that flip").first.wait_for(timeout=60_000)
    page.wait_for_function(DONE, timeout=60_000)
    want = what_if(lake, "length", {"min_duration_s": 2.5})
    body = page.inner_text("body")
    assert f"(first {len(want.flips)} of {want.flips_total})" in body and want.flips_total > 0
    _shot(page, shots, "whatif")
    cmd = next(
        line for line in body.splitlines() if line.startswith("sila whatif") and "--apply" in line
    )
    res = subprocess.run(
        [str(BIN / "sila"), *shlex.split(cmd)[1:]], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    t = lake.table("sources").to_table(columns=["id", "length_keep"])
    assert dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True)) == (
        want.predicted
    )
