"""Fragment leases with generation fencing, on create-if-absent + list + overwrite-own only.

`leases/<table>/<stage>/<fragment-key>/<gen>.json` holds {owner, job, host, pid, state,
acquired_at, expires_at}. Acquire = exclusive create of gen+1 when the newest gen is absent,
expired, released or committed. At most one owner per generation, ever: the store refuses a
second create. An owner that finds a newer generation has lost the fragment.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from sila.coordinator.store import Store

log = logging.getLogger(__name__)

HELD, RELEASED, COMMITTED = "held", "released", "committed"


@dataclass
class Lease:
    table: str
    stage: str
    fragment: str  # fragment key: "<id>-<base file>"
    gen: int
    owner: str
    job: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    stage_version: str = ""
    state: str = HELD
    acquired_at: float = 0.0
    expires_at: float = 0.0
    renewed_at: float = 0.0
    segments_done: int = 0
    lost: bool = False
    previous_state: str | None = None  # state of the generation we took over (not persisted)

    @property
    def key(self) -> str:
        return lease_key(self.table, self.stage, self.fragment, self.gen)

    def payload(self) -> bytes:
        d = asdict(self)
        d.pop("lost")
        d.pop("previous_state")
        return json.dumps(d).encode()


def lease_dir(table: str, stage: str, fragment: str) -> str:
    return f"leases/{table}/{stage}/{fragment}"


def lease_key(table: str, stage: str, fragment: str, gen: int) -> str:
    return f"{lease_dir(table, stage, fragment)}/{gen:08d}.json"


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseStore:
    def __init__(self, store: Store, ttl: float = 60.0) -> None:
        self.store = store
        self.ttl = ttl

    def _generations(self, table: str, stage: str, fragment: str) -> list[tuple[int, str]]:
        gens = []
        for e in self.store.list(lease_dir(table, stage, fragment)):
            name = e.key.rsplit("/", 1)[-1]
            if name.endswith(".json") and name[:-5].isdigit():
                gens.append((int(name[:-5]), e.key))
        return sorted(gens)

    def read(self, key: str) -> dict | None:
        raw = self.store.get(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None  # torn write of a non-atomic store: treat as expired

    def newest(self, table: str, stage: str, fragment: str) -> dict | None:
        gens = self._generations(table, stage, fragment)
        return self.read(gens[-1][1]) if gens else None

    def acquire(
        self,
        table: str,
        stage: str,
        fragment: str,
        *,
        owner: str,
        job: str,
        stage_version: str = "",
    ) -> Lease | None:
        """Take the fragment, or None when someone else holds a live lease (or wins the race)."""
        gens = self._generations(table, stage, fragment)
        top, previous = 0, None
        if gens:
            top, key = gens[-1]
            cur = self.read(key)
            if cur and cur.get("state") == HELD and cur.get("expires_at", 0) > time.time():
                return None
            previous = cur.get("state") if cur else None
        now = time.time()
        lease = Lease(
            table,
            stage,
            fragment,
            top + 1,
            owner,
            job,
            stage_version=stage_version,
            acquired_at=now,
            expires_at=now + self.ttl,
            renewed_at=now,
            previous_state=previous,
        )
        if not self.store.create(lease.key, lease.payload()):
            return None
        for _, old in gens[:-1]:  # keep the previous gen: it shows who we took over from
            self.store.delete(old)
        return lease

    def valid(self, lease: Lease, margin: float | None = None) -> bool:
        """Ours without asking the store: nobody can take a lease before it expires, so a lease
        renewed recently enough is still ours. Otherwise check the store (fencing)."""
        margin = self.ttl / 4 if margin is None else margin
        if lease.lost:
            return False
        if lease.expires_at - time.time() > margin:
            return True
        return self.still_owned(lease)

    def still_owned(self, lease: Lease) -> bool:
        gens = self._generations(lease.table, lease.stage, lease.fragment)
        if not gens or gens[-1][0] != lease.gen:
            return False
        cur = self.read(gens[-1][1])
        return bool(cur) and cur.get("owner") == lease.owner and cur.get("state") == HELD

    def renew(self, lease: Lease) -> bool:
        """Extend our lease; False (and lease.lost) when a newer generation exists."""
        if lease.lost or not self.still_owned(lease):
            lease.lost = True
            return False
        now = time.time()
        lease.renewed_at, lease.expires_at = now, now + self.ttl
        self.store.put(lease.key, lease.payload())
        return True

    def release(self, lease: Lease, *, committed: bool = False) -> None:
        if not self.valid(lease):
            return
        lease.state = COMMITTED if committed else RELEASED
        lease.expires_at = 0.0
        self.store.put(lease.key, lease.payload())

    def busy(self, table: str, stage: str) -> set[str]:
        """Fragment keys whose newest lease file was written within one TTL: probably held, so
        not worth a claim attempt. One listing for the whole stage (~1 request per 1,000
        leases) instead of a list + get per fragment; the claim itself still decides."""
        newest: dict[str, tuple[int, datetime]] = {}
        for e in self.store.list(f"leases/{table}/{stage}"):
            d, name = e.key.rsplit("/", 1)
            if name.endswith(".json") and name[:-5].isdigit():
                g = int(name[:-5])
                if d not in newest or newest[d][0] < g:
                    newest[d] = (g, e.modified)
        horizon = datetime.now(UTC) - timedelta(seconds=self.ttl)
        return {d.rsplit("/", 1)[-1] for d, (_, modified) in newest.items() if modified > horizon}

    def live(self, table: str | None = None) -> list[dict]:
        """Leases held and unexpired right now (for status and compact)."""
        prefix = f"leases/{table}" if table else "leases"
        newest: dict[str, tuple[int, str]] = {}
        for e in self.store.list(prefix):
            d, name = e.key.rsplit("/", 1)
            if name.endswith(".json") and name[:-5].isdigit():
                g = int(name[:-5])
                if d not in newest or newest[d][0] < g:
                    newest[d] = (g, e.key)
        out = []
        now = time.time()
        for _, key in newest.values():
            cur = self.read(key)
            if cur and cur.get("state") == HELD and cur.get("expires_at", 0) > now:
                out.append(cur)
        return out


class Heartbeat:
    """Renews every lease a worker holds every `interval` seconds, on a daemon thread."""

    def __init__(self, leases: LeaseStore, interval: float) -> None:
        self.leases = leases
        self.interval = interval
        self.held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sila-heartbeat", daemon=True)
        self.last_beat = time.time()

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def add(self, lease: Lease) -> None:
        with self._lock:
            self.held[lease.key] = lease

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self.held.pop(lease.key, None)

    def beat(self) -> None:
        with self._lock:
            leases = list(self.held.values())
        for lease in leases:
            try:
                if not self.leases.renew(lease):
                    log.warning(
                        "lost lease on %s/%s fragment %s", lease.table, lease.stage, lease.fragment
                    )
            except Exception as e:  # noqa: BLE001 - a flaky store must not kill the worker
                log.warning("heartbeat failed for %s: %s", lease.key, e)
        self.last_beat = time.time()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
