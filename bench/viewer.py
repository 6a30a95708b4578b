"""Viewer page load times on a 100k-row clips table (generated rows, a few real media).

`python -m bench viewer [--rows 100000] [--fragments 100] [--keep DIR]`

ours: a page opening in headless Chromium against `sila view`: a click on the page's link in
the sidebar until streamlit says the page's script finished and every element rendered; warm:
after the app's first load and a first visit of each page. When playwright or Chromium are missing the same pages are timed as
AppTest reruns instead (no browser). ref: the raw Lance reads the page needs, without the UI.
Also: per-column coverage from fragment metadata (ours) vs counting non-nulls by scanning every
column (ref).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa

from bench._util import report
from sila.lake import Lake
from sila.media import run_ffmpeg
from sila.schema import blob_field, owned, sources_schema

REAL_MEDIA = 8  # clips with a real mp4 in their `video` blob; the rest have none
DIM = 64


def _media(tmp: Path) -> tuple[bytes, bytes]:
    jpg, mp4 = tmp / "t.jpg", tmp / "c.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=320x180", "-frames:v", "1", "-y", str(jpg)])
    run_ffmpeg(
        ["-f", "lavfi", "-i", "testsrc2=s=320x180:r=25", "-t", "2", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-y", str(mp4)]
    )  # fmt: skip
    return jpg.read_bytes(), mp4.read_bytes()


def build(lake: Lake, rows: int, fragments: int, tmp: Path) -> None:
    """sources (1 per 20 clips, with thumbnails) and a clips table with every stage's columns."""
    jpg, mp4 = _media(tmp)
    n_src = max(1, rows // 20)
    rng = np.random.default_rng(0)
    schema = sources_schema()
    src = {f.name: pa.nulls(n_src, f.type) for f in schema}
    src["id"] = pa.array([f"s{i:06d}" for i in range(n_src)])
    src["filename"] = pa.array([f"video_{i}.mp4" for i in range(n_src)])
    src["media_kind"] = pa.array(["video"] * n_src)
    src["duration_s"] = pa.array(rng.uniform(5, 120, n_src))
    src["media"] = pa.nulls(n_src, pa.large_binary())
    thumbs = owned(
        [pa.field("thumbnail", pa.binary()), pa.field("thumbnail_error", pa.string())],
        "thumbnail",
        "1",
    )
    tbl = pa.table(src, schema=schema)
    tbl = tbl.append_column(thumbs[0], pa.array([jpg] * n_src, pa.binary()))
    tbl = tbl.append_column(thumbs[1], pa.nulls(n_src, pa.string()))
    lance.write_dataset(tbl, lake.table_uri("sources"), max_rows_per_file=max(1, n_src // 10))

    i = np.arange(rows)
    dur = rng.uniform(0.5, 12, rows)
    short = rng.choice([240, 360, 480, 720, 1080], rows)
    split = owned(
        [pa.field(n, t) for n, t in [("id", pa.string()), ("source_id", pa.string()),
         ("clip_index", pa.int32()), ("start_s", pa.float64()), ("end_s", pa.float64()),
         ("duration_s", pa.float64()), ("width", pa.int32()), ("height", pa.int32())]],
        "split", "1",
    )  # fmt: skip
    trans = owned(
        [blob_field("video"), pa.field("video_width", pa.int32()),
         pa.field("video_height", pa.int32()), pa.field("video_duration_s", pa.float64()),
         pa.field("transcode_error", pa.string())],
        "transcode", "1",
    )  # fmt: skip
    qual = owned(
        [pa.field("quality_score", pa.float32()), pa.field("quality_keep", pa.bool_()),
         pa.field("quality_reasons", pa.list_(pa.string())), pa.field("caption", pa.string()),
         pa.field("quality_error", pa.string())],
        "quality", "1",
    )  # fmt: skip
    ded = owned(
        [pa.field("embedding", pa.list_(pa.float32(), DIM)), pa.field("dedup_group", pa.string()),
         pa.field("dedup_keep", pa.bool_()), pa.field("dedup_similarity", pa.float32()),
         pa.field("dedup_error", pa.string())],
        "dedup", "1",
    )  # fmt: skip
    score = rng.uniform(0, 1, rows).astype(np.float32)
    reasons = [[] if s > 0.3 else ["blurry"] if s > 0.1 else ["blurry", "dark"] for s in score]
    groups = rng.integers(0, rows // 4, rows)
    emb = rng.normal(size=(rows, DIM)).astype(np.float32)
    video = [mp4 if k < REAL_MEDIA else None for k in range(rows)]
    cols = [
        pa.array([f"s{k // 20:06d}/{(k % 20) * 50}-{(k % 20) * 50 + 50}" for k in i]),
        pa.array([f"s{k // 20:06d}" for k in i]),
        pa.array(i % 20, pa.int32()),
        pa.array((i % 20) * 2.0),
        pa.array((i % 20) * 2.0 + dur),
        pa.array(dur),
        pa.array((short * 16 // 9).astype(np.int32)),
        pa.array(short.astype(np.int32)),
        pa.array(video, pa.large_binary()),
        pa.array((short * 16 // 9).astype(np.int32)),
        pa.array(short.astype(np.int32)),
        pa.array(dur),
        pa.nulls(rows, pa.string()),
        pa.array(score),
        pa.array(score > 0.3),
        pa.array(reasons, pa.list_(pa.string())),
        pa.array(['{"comprehensive_t2i_caption": "a generated row"}'] * rows),
        pa.nulls(rows, pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), DIM),
        pa.array([f"g{g}" for g in groups]),
        pa.array(rng.uniform(0, 1, rows) > 0.5),
        pa.array(rng.uniform(0.9, 1, rows).astype(np.float32)),
        pa.nulls(rows, pa.string()),
    ]
    schema = pa.schema(split + trans + qual + ded)
    lance.write_dataset(
        pa.Table.from_arrays(cols, schema=schema),
        lake.table_uri("clips"),
        max_rows_per_file=max(1, rows // fragments),
    )


PAGES = [("overview", "/", "Overview"), ("samples", "/samples", "Samples"),
         ("sample", "/sample?table=clips&id={cid}", "clips sample"), ("search", "/search", "Search"),
         ("duplicates", "/duplicates", "Duplicates"),
         ("distributions", "/distributions", "Distributions")]  # fmt: skip
DONE = (
    "() => document.querySelector('[data-testid=stApp]')"
    "?.getAttribute('data-test-script-state') === 'notRunning'"
    " && !document.querySelector('[data-testid=stSkeleton]')"
)


def raw_reads(lake: Lake, page: str, cid: str) -> None:
    """What the page reads, straight from Lance (the floor under any UI)."""
    clips = lake.table("clips")
    if page == "overview":
        for name in lake.tables():
            ds = lake.table(name)
            for frag in ds.get_fragments():
                frag.data_files()
            ds.versions()
    elif page == "samples":
        clips.count_rows()
        clips.to_table(columns=["id", "source_id", "clip_index", "quality_score"], limit=24)
    elif page == "sample":
        t = clips.to_table(filter=f"id = '{cid}'", columns=["id", "source_id"], with_row_id=True)
        b = clips.take_blobs("video", ids=[t["_rowid"][0].as_py()])[0]
        b.readall()
    elif page == "search":
        clips.schema  # noqa: B018 - the page only checks for the embedding column
    elif page == "duplicates":
        clips.to_table(columns=["dedup_group", "dedup_keep"], filter="dedup_group IS NOT NULL")
    elif page == "distributions":
        for c in ("quality_score", "dedup_similarity", "quality_keep", "quality_reasons",
                  "video_width", "video_height", "video_duration_s"):  # fmt: skip
            clips.to_table(columns=[c])
        clips.take(list(range(0, clips.count_rows(), 50))[:2000], columns=["embedding", "id"])


def _timed(fn, repeat: int) -> float:
    fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def browser_times(lake: Lake, cid: str, repeat: int) -> dict[str, float] | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    exe = shutil.which("chromium")
    if not exe:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sila = str(Path(sys.executable).parent / "sila")
    log = open(Path(lake.uri).parent / "server.log", "w")  # noqa: SIM115 - closed below
    env = {**os.environ, "STREAMLIT_LOGGER_LEVEL": "info"}  # the app logs each page's run time
    proc = subprocess.Popen(
        [sila, "view", "--lake", lake.uri, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    out: dict[str, float] = {}
    try:
        import requests

        for _ in range(300):
            try:
                if requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])

            page = b.new_page(viewport={"width": 1400, "height": 1200})

            def settle(heading: str, t: float) -> float:
                page.get_by_role("heading", name=heading).first.wait_for(timeout=120_000)
                page.wait_for_function(DONE, timeout=120_000)
                return time.perf_counter() - t

            t = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/")
            print(f"  app's first load (overview): {settle('Overview', t):.2f}s", flush=True)
            samples: dict[str, list[float]] = {name: [] for name, _, _ in PAGES}
            for _ in range(repeat + 1):  # the first round fills each page's caches
                for name, _, heading in PAGES[1:] + PAGES[:1]:
                    t = time.perf_counter()  # a click in the sidebar, as a person moves around
                    nav = page.locator("[data-testid=stSidebarNav]")
                    nav.get_by_role("link", name=name.capitalize(), exact=True).click()
                    samples[name].append(settle(heading, t))
            for name, ts in samples.items():
                out[name] = statistics.median(ts[1:])
                print(f"  {name}: first open {ts[0]:.2f}s, warm {out[name]:.2f}s", flush=True)
            b.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    runs: dict[str, list[float]] = {}
    for line in Path(log.name).read_text().splitlines():  # "page <url> ran in <s> s"
        if " ran in " in line and "page " in line:
            words = line.split("page ", 1)[1].split()
            runs.setdefault(words[0], []).append(float(words[3]))
    for name, ts in runs.items():
        warm = statistics.median(ts[2:]) if len(ts) > 2 else ts[-1]
        print(
            f"  {name}: server-side script run, warm {warm:.3f}s (first {ts[0]:.3f}s)", flush=True
        )
    return out


def apptest_times(lake: Lake, cid: str, repeat: int) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    os.environ["SILA_VIEW_LAKE"] = lake.uri
    app = str(Path(__file__).resolve().parents[1] / "viewer" / "app.py")
    out = {}
    for name, _, _ in PAGES:
        at = AppTest.from_file(app, default_timeout=300)
        if name != "overview":
            at.switch_page(f"{name}.py")
        at.query_params["id"] = cid
        out[name] = _timed(lambda at=at: at.run(), repeat)
    return out


def coverage_compare(lake: Lake, size: str) -> None:
    from sila.coordinator.discovery import split_fragments

    ds = lake.table("clips")

    def meta():
        for stage in ("split", "transcode", "quality", "dedup"):
            split_fragments(ds, stage)

    def scan():  # what a viewer without fragment metadata would do: count non-nulls per column
        for f in ds.schema:
            if f.name != "video":
                ds.count_rows(filter=f"{f.name} IS NOT NULL")

    report(
        f"viewer_coverage_{size}", _timed(meta, 3), _timed(scan, 1), note="metadata vs column scans"
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench viewer")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--fragments", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="build the lake here and keep it")
    ap.add_argument("--no-browser", action="store_true", help="time AppTest reruns only")
    args = ap.parse_args(argv)
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="sila-bench-viewer-"))
    lake = Lake(tmp / "lake")
    if not lake.has_table("clips"):
        lake.init()
        t = time.perf_counter()
        build(lake, args.rows, args.fragments, tmp)
        print(
            f"built {args.rows:,} clips in {args.fragments} fragments in {time.perf_counter() - t:.1f}s"
        )
    cid = lake.table("clips").to_table(columns=["id"], limit=1)["id"][0].as_py()
    times = None if args.no_browser else browser_times(lake, cid, args.repeat)
    how = "browser, warm"
    if times is None:
        times, how = apptest_times(lake, cid, args.repeat), "AppTest rerun, warm"
    rows = lake.table("clips").count_rows()
    size = f"{rows // 1000}k" if rows >= 1000 else str(rows)
    for name, _, _ in PAGES:
        ref = _timed(lambda name=name: raw_reads(lake, name, cid), args.repeat)
        report(f"viewer_{name}_{size}", times[name], ref, note=f"{how}; ref = raw Lance reads")
    coverage_compare(lake, size)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0
