"""The SILA viewer: `sila view --lake L` runs `streamlit run` on this file.

Pages are the files next to it; each reads the lake named by $SILA_VIEW_LAKE, read-only.
"""

from __future__ import annotations

import time

import streamlit as st
from sila.viewer import data
from streamlit.logger import get_logger

log = get_logger("sila.viewer")  # follows `--logger.level`: `info` prints page run times

PAGES = [
    ("overview.py", "Overview", "overview"),
    ("samples.py", "Samples", "samples"),
    ("sample.py", "Sample", "sample"),
    ("search.py", "Search", "search"),
    ("duplicates.py", "Duplicates", "duplicates"),
    ("distributions.py", "Distributions", "distributions"),
    ("whatif.py", "What if", "whatif"),
]


def main() -> None:
    st.set_page_config(page_title="SILA viewer", layout="wide")
    pages = [
        st.Page(path, title=title, url_path=url, default=i == 0)
        for i, (path, title, url) in enumerate(PAGES)
    ]
    nav = st.navigation(pages)
    st.sidebar.caption(f"lake: `{data.lake_uri()}` (read-only)")
    t = time.perf_counter()
    nav.run()
    log.info("page %s ran in %.3f s", nav.url_path or "overview", time.perf_counter() - t)


main()
