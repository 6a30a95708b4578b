"""Lake-wide state for the viewer's overview: status, column coverage, versions, jobs, leases.

Every read here is metadata (manifests, fragment data-file lists, job and lease records), cached
per table version or for a few seconds, so the overview stays live without scanning data.
"""

from __future__ import annotations

import time

import streamlit as st
from sila.coordinator.leases import LeaseStore
from sila.coordinator.ops.jobs import JobLog
from sila.coordinator.ops.status import lake_status
from sila.viewer.data import LIVE_TTL, STATUS_TTL, columns_of, lake, lake_uri, version


@st.cache_data(ttl=STATUS_TTL, show_spinner=False, max_entries=8)
def _status(uri: str) -> dict:
    return lake_status(lake())


def status() -> dict:
    """`sila status` (coordinator.ops.status.lake_status): per stage done/pending/errors/stale."""
    return _status(lake_uri())


@st.cache_data(show_spinner=False, max_entries=64)
def _coverage(uri: str, table: str, ver: int) -> list[dict]:
    ds = lake().table(table, version=ver)

    def ids(f) -> set[int]:
        out = {f.id()}
        for c in f.children():
            out |= ids(c)
        return out

    fields = {f.name(): ids(f) for f in ds.lance_schema.fields()}
    rows_with: dict[str, int] = dict.fromkeys(fields, 0)
    total = 0
    for frag in ds.get_fragments():  # manifest only: data files list the field ids they hold
        have: set[int] = set()
        for df in frag.data_files():
            have.update(df.fields)
        n = frag.count_rows()
        total += n
        for name, fids in fields.items():
            if fids & have:
                rows_with[name] += n
    by_name = {c.name: c for c in columns_of(ds.schema)}
    return [
        {
            "column": name,
            "stage": by_name[name].group if name in by_name else "base",
            "coverage": (rows_with[name] / total) if total else 0.0,
            "rows": rows_with[name],
        }
        for name in fields
    ]


def column_coverage(table: str) -> list[dict]:
    """Per column: the fraction of rows in fragments whose data files hold it (no data read)."""
    return _coverage(lake_uri(), table, version(table))


@st.cache_data(show_spinner=False, max_entries=64)
def _versions(uri: str, table: str, ver: int) -> list[dict]:
    out = []
    for v in lake().table(table, version=ver).versions():
        meta = v.get("metadata") or {}
        out.append(
            {
                "version": v["version"],
                "time": v["timestamp"],
                "rows": int(meta.get("total_rows", 0) or 0),
                "fragments": int(meta.get("total_fragments", 0) or 0),
            }
        )
    return out


def versions(table: str) -> list[dict]:
    """Every committed version with its rows and fragments (manifest summaries, no scan)."""
    return _versions(lake_uri(), table, version(table))


@st.cache_data(ttl=LIVE_TTL, show_spinner=False, max_entries=8)
def _jobs(uri: str, limit: int) -> list[dict]:
    return JobLog(lake().store).all()[-limit:][::-1]


@st.cache_data(ttl=LIVE_TTL, show_spinner=False, max_entries=8)
def _leases(uri: str) -> list[dict]:
    now = time.time()
    out = []
    for lease in LeaseStore(lake().store).live():  # one listing of live leases, no table read
        out.append(
            {
                "table": lease.get("table"),
                "stage": lease.get("stage"),
                "fragment": lease.get("fragment"),
                "gen": lease.get("gen"),
                "owner": lease.get("owner"),
                "job": lease.get("job"),
                "age_s": round(now - lease.get("acquired_at", now), 1),
                "heartbeat_lag_s": round(
                    now - lease.get("renewed_at", lease.get("acquired_at", now)), 1
                ),
                "segments_done": lease.get("segments_done", 0),
            }
        )
    return out


def leases() -> list[dict]:
    """Live leases right now (the same fields `sila status` shows)."""
    return _leases(lake_uri())


def jobs(limit: int = 20) -> list[dict]:
    """The newest job records from `_sila/jobs/`, metrics (per-pool figures) included."""
    return _jobs(lake_uri(), limit)
