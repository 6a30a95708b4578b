"""Every viewer page, run by streamlit's AppTest on a generated lake (no browser)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest
from streamlit.testing.v1 import AppTest

from tests.viewer.conftest import lake_files

APP = str(Path(__file__).resolve().parents[2] / "viewer" / "app.py")
TIMEOUT = 60


def page(name: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if name:
        at.switch_page(name)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("title", "markdown", "caption", "info", "warning", "error", "code", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [str(m.label) + " " + str(m.value) for m in at.metric]
    return "\n".join(parts)


def clear_caches() -> None:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


def elements(at: AppTest, kind: str) -> list:
    return list(at.get(kind))


def test_overview_shows_tables_stages_coverage_versions_leases_jobs(view_env, live_lease):
    lake = view_env
    st = lake.status()
    at = page()
    body = texts(at)
    assert "Overview" in body
    for name, t in st["tables"].items():
        assert f"{t['rows']:,} rows" in body, name
        assert f"{t['fragments']:,} fragment" in body
    # stages table: one row per (table, stage) with the status figures
    frames = [d.value for d in at.dataframe]
    stages = next(f for f in frames if "stage" in f.columns and "coverage" in f.columns)
    got = {(r.table, r.stage): r for r in stages.itertuples()}
    assert {("sources", "thumbnail"), ("sources", "split"), ("clips", "transcode")} <= set(got)
    assert {("clips", "quality"), ("clips", "dedup")} <= set(got)
    thumb = got[("sources", "thumbnail")]
    assert thumb.pending == st["tables"]["sources"]["stages"]["thumbnail"]["fragments_pending"] == 1
    assert thumb.done == 1
    assert got[("clips", "quality")].coverage == 1.0
    keep = st["tables"]["clips"]["stages"]["quality"].get("keep")
    if keep:  # decision stages: kept / rejected counts from status
        assert got[("clips", "quality")].kept.startswith(f"{keep['kept']:,} / {keep['rejected']:,}")
    # charts: stage coverage, versions over time, one column-coverage chart per table
    assert len(elements(at, "vega_lite_chart")) >= 2 + len(st["tables"])
    # the live lease and the job records with their progress
    lease_frame = next(f for f in frames if "owner" in f.columns)
    assert "test-worker" in set(lease_frame["owner"])
    jobs = next(f for f in frames if "job" in f.columns and "state" in f.columns)
    assert {"thumbnail", "split", "transcode", "quality", "dedup"} <= set(jobs["stage"])
    assert set(jobs["state"]) == {"succeeded"}


def test_column_coverage_comes_from_fragment_metadata(view_env):
    """The late ingest is one fragment without thumbnail data files: coverage says so exactly."""
    from sila.viewer import lake_state

    cov = {c["column"]: c for c in lake_state.column_coverage("sources")}
    rows = view_env.table("sources").count_rows()
    assert cov["id"]["rows"] == rows
    assert cov["thumbnail"]["rows"] == rows - 1
    assert cov["thumbnail"]["stage"] == "thumbnail"
    assert cov["split_shots"]["rows"] == rows - 1


def test_samples_grid_where_paging_random_and_table(view_env):
    lake = view_env
    clips = lake.table("clips")
    at = page("samples.py")
    n = clips.count_rows()
    assert f"of {n:,} matching" in texts(at)
    assert len(at.get("image")) >= 1  # thumbnail grid (the source's thumbnail per clip)
    links = [p.proto.page for p in at.get("page_link")]
    assert links and all(p.endswith("sample.py") or "sample" in p for p in links)
    # a where box: the count and rows are exactly what Lance says
    at.text_input(key="where_clips").input("clip_index >= 2 AND quality_keep").run()
    want = clips.count_rows(filter="clip_index >= 2 AND quality_keep")
    assert 0 < want < n
    assert f"of {want:,} matching" in texts(at)
    # table view with picked columns
    at.multiselect(key="cols_clips").set_value(["id", "clip_index", "quality_score"])
    at.radio(key="view").set_value("table").run()
    df = at.dataframe[0].value
    assert len(df) == want and list(df.columns) == ["id", "clip_index", "quality_score"]
    assert (df["clip_index"] >= 2).all()
    # random sample: rows from the filtered set
    at.radio(key="mode").set_value("random").run()
    assert f"random rows of {want:,} matching" in texts(at)
    df = at.dataframe[0].value
    assert (df["clip_index"] >= 2).all()
    # a bad predicate is an error next to the box, not a crash
    at.text_input(key="where_clips").input("no_such_column > 1").run()
    assert not at.exception
    assert any("refused" in e.value for e in at.error)


def test_samples_paging_over_sources(view_env):
    at = page("samples.py", table="sources")
    n = view_env.table("sources").count_rows()
    at.selectbox(key="page_size").set_value(12).run()
    at.number_input(key="page_sources").set_value(1).run()
    assert f"rows 1–{min(12, n)} of {n:,} matching" in texts(at)


def _clip(lake, where: str = "clip_index = 1"):
    return lake.table("clips").to_table(filter=where, limit=1, with_row_id=True).to_pylist()[0]


def test_sample_page_plays_the_clip_and_shows_everything(view_env):
    lake = view_env
    clip = _clip(lake)
    at = page("sample.py", table="clips", id=clip["id"])
    body = texts(at)
    videos = elements(at, "video")
    assert len(videos) == 1
    size = lake.table("clips").take_blobs("video", ids=[clip["_rowid"]])[0].size()
    assert f"video: {size:,} bytes" in body
    # source and neighbours
    assert "source" in body and "neighbouring clips" in body
    assert "(this clip)" in body
    near = [p.proto.query_string for p in at.get("page_link")]
    assert any("clip_index" not in q and "id=" in q for q in near)
    # columns by the stage that wrote them
    expanders = [e.label for e in at.expander]
    assert any(lbl.startswith("quality") for lbl in expanders)
    assert any(lbl.startswith("transcode") for lbl in expanders)
    assert any(lbl.startswith("dedup") for lbl in expanders)
    verdict = "kept" if clip["quality_keep"] else "dropped"
    assert f"quality_keep: :{'green' if clip['quality_keep'] else 'red'}[**{verdict}**]" in body
    if not clip["quality_keep"]:
        assert "low_score, short" in body
    cap = json.loads(clip["caption"])
    assert f"> {cap['comprehensive_t2i_caption']}" in body  # the caption, readable
    assert "**background setting**" in body
    assert any(m.label == "quality_score" for m in at.metric)


def test_sample_page_for_an_image_an_audio_file_and_an_error(view_env):
    lake = view_env
    src = lake.table("sources").to_table(columns=["id", "media_kind", "ingest_error"]).to_pylist()
    image = next(r for r in src if r["media_kind"] == "image")
    at = page("sample.py", table="sources", id=image["id"])
    assert len(at.get("image")) >= 1 and not elements(at, "video")
    audio = next(r for r in src if r["media_kind"] == "audio")
    at = page("sample.py", table="sources", id=audio["id"])
    assert len(elements(at, "audio")) == 1
    assert "no picture to thumbnail" not in texts(at)  # audio is outside thumbnail's where
    video = next(r for r in src if r["media_kind"] == "video")
    at = page("sample.py", table="sources", id=video["id"])
    assert "clips of this source" in texts(at)
    at = page("sample.py", table="clips", id="no/such-id")
    assert any("no row with id" in e.value for e in at.error)


def test_search_page_without_a_retrieval_api_says_what_to_run(view_env, monkeypatch):
    from sila.lake import Lake

    monkeypatch.delattr(Lake, "search", raising=False)
    assert "sila index build --lake" in texts(page("search.py"))


def test_search_more_like_this_with_a_where_through_the_retrieval_api(view_env):
    """The real `Lake.search` (exact search: no index on this small lake)."""
    clip = _clip(view_env, "clip_index = 0")
    want = view_env.search(like=clip["id"], where="quality_keep", k=24)
    assert want.results
    at = page("search.py", like=clip["id"])
    assert "loads on the first query" in texts(at)
    at.radio(key="search_mode").set_value("more like this").run()
    at.text_input(key="search_like").input(clip["id"])
    at.text_input(key="search_where").input("quality_keep")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    body = texts(at)
    assert f"{len(want.results)} results" in body
    assert all(n in body for n in want.notes)  # e.g. "exact search"
    shown = [p.proto.query_string for p in at.get("page_link")]
    ids = [r["id"] for r in want.results]
    assert [q for q in shown if "table=clips" in q] == [
        next(q for q in shown if i.replace("/", "%2F") in q) for i in ids
    ]
    kept = set(
        view_env.table("clips").to_table(columns=["id"], filter="quality_keep")["id"].to_pylist()
    )
    assert set(ids) <= kept and clip["id"] not in ids


def test_duplicates_page_shows_groups_and_who_was_kept(view_env):
    lake = view_env
    t = lake.table("clips").to_table(columns=["dedup_group", "dedup_keep"])
    groups = pc.value_counts(t["dedup_group"])
    multi = [
        g
        for g, c in zip(
            groups.field("values").to_pylist(), groups.field("counts").to_pylist(), strict=True
        )
        if c > 1
    ]
    at = page("duplicates.py")
    body = texts(at)
    assert f"{len(multi):,} groups with more than one member" in body
    kept = sum(1 for m in at.markdown if ":green[**kept**]" in m.value)
    dups = sum(1 for m in at.markdown if ":red[duplicate]" in m.value)
    assert kept == min(len(multi), 8)
    in_groups = pc.is_in(t["dedup_group"], value_set=__import__("pyarrow").array(multi))
    assert dups == pc.sum(pc.and_(in_groups, pc.invert(t["dedup_keep"]))).as_py()


def test_distributions_page_draws_histograms_counts_buckets_and_a_map(view_env):
    at = page("distributions.py")
    body = texts(at)
    charts = elements(at, "vega_lite_chart")
    # quality_score and other numeric histograms, decisions/tags/reasons counts, buckets, map
    assert len(charts) >= 6
    n = view_env.table("clips").count_rows(filter="video_width IS NOT NULL")
    assert f"{n:,} samples by short side" in body
    assert "random rows with `embedding`" in body
    specs = " ".join(c.proto.spec for c in charts)
    for name in ("quality_score", "quality_reasons", "tags", "quality_keep"):
        assert name in specs


def test_a_lake_before_any_stage_says_what_to_run(tmp_path, monkeypatch, corpus):
    import sila

    lake = sila.Lake(tmp_path / "lake").init()
    monkeypatch.setenv("SILA_VIEW_LAKE", lake.uri)
    assert "sila ingest PATH" in texts(page())
    lake.ingest([corpus["multishot_b.mp4"], corpus["image_photo.jpg"]])
    clear_caches()  # pages re-read the lake every few seconds; the test does not wait
    body = texts(page())
    assert "sila run split --lake" in body and "sila run thumbnail --lake" in body
    assert "sila run split" in texts(page("search.py"))
    assert "sila run split" in texts(page("duplicates.py")) or "dedup" in texts(
        page("duplicates.py")
    )
    dist = texts(page("distributions.py", table="sources"))
    assert "Distributions" in dist
    at = page("sample.py", table="sources")
    assert not at.exception


def test_pages_never_write_and_never_read_a_blob_column_whole(view_env, monkeypatch):
    """No page changes a file of the lake; every Lance read names its columns and none is a
    blob column (media come one row at a time through take_blobs)."""
    import lance

    blobs = {"video", "media"}
    calls = []

    def spy(name):
        real = getattr(lance.LanceDataset, name)

        def wrapper(self, *args, **kwargs):
            cols = kwargs.get("columns")
            if cols is None and name == "take" and len(args) > 1:
                cols = args[1]
            calls.append((name, None if cols is None else list(cols)))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(lance.LanceDataset, name, wrapper)

    for name in ("to_table", "take"):
        spy(name)
    clear_caches()
    clip = _clip(view_env)
    before = lake_files(view_env)
    calls.clear()
    for name, query in [
        (None, {}),
        ("samples.py", {}),
        ("sample.py", {"table": "clips", "id": clip["id"]}),
        ("search.py", {}),
        ("duplicates.py", {}),
        ("distributions.py", {}),
    ]:
        page(name, **query)
    assert lake_files(view_env) == before
    assert calls
    assert all(cols is not None for _, cols in calls), [c for c in calls if c[1] is None]
    assert not [c for c in calls if blobs & set(c[1])]


@pytest.mark.parametrize("host", ["127.0.0.1"])
def test_cli_view_binds_loopback_by_default(host):
    from sila.cli.view import streamlit_argv

    argv = streamlit_argv(__import__("pathlib").Path("app.py"), host, 8501)
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
