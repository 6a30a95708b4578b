"""Fragment leases with generation fencing, on create-if-absent + list + overwrite-own only.

`leases/<table>/<stage>/<fragment-key>/<gen>.json` holds {owner, job, host, pid, state,
acquired_at, expires_at}. Acquire = exclusive create of gen+1 when the newest gen is absent or
expired. While files exist, a generation has one owner: the store refuses a second create. An
owner that finds a newer generation, or another owner in its own, has lost the fragment.

A renewal is an exclusive create of the next generation too, so a renewing owner and a taker
race for the same file and the store lets one through. A commit deletes the lease file (the
manifest is the truth) and a taker deletes the generations it replaced, so a listing costs
O(live or abandoned leases), never O(fragments ever processed). Generations restart at 1 once
a fragment's files are gone; every check compares the owner id (unique per worker) as well.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
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
        self._lock = threading.RLock()  # a heartbeat's renewal never interleaves a release

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
        top, previous, seen = 0, None, None
        if gens:
            top, seen = gens[-1]
            cur = self.read(seen)
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
        # Files get deleted, so a slow taker can re-create a generation removed after its
        # listing: look again, and step back unless ours is the newest and no one else's
        # lease is live (a rival that looked at the same time steps back the same way).
        now_gens = self._generations(table, stage, fragment)
        for g, key in now_gens:
            if key in (lease.key, seen):
                continue
            cur = None if g > lease.gen else self.read(key)
            if g > lease.gen or (
                cur
                and cur.get("state") == HELD
                and cur.get("expires_at", 0) > time.time()
                and cur.get("owner") != owner
            ):
                self.store.delete(lease.key)
                return None
        for _, old in now_gens:  # what we took over is in `previous_state`; files only cost
            if old != lease.key:
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
        """Extend our lease; False (and lease.lost) when someone else holds the fragment.

        Renewal is an exclusive create of the next generation, the same create a taker of an
        expired lease makes, so the store lets exactly one of the two through: a renewal can
        never overwrite a successor. Write first, then trust: `gen`/`expires_at` change only
        once the store has the new file (a failed write raises and changes nothing), and the
        expiry counts from before the write."""
        with self._lock:
            if lease.lost or lease.state != HELD:
                return False
            if self.store.get(lease.key) is None:  # a successor took over (and removed ours)
                lease.lost = True
                return False
            now = time.time()
            renewed = replace(lease, gen=lease.gen + 1, renewed_at=now, expires_at=now + self.ttl)
            if not self.store.create(renewed.key, renewed.payload()):
                lease.lost = True  # an expired lease taken over between our beats
                return False
            old = lease.key
            lease.gen, lease.renewed_at, lease.expires_at = renewed.gen, now, renewed.expires_at
            self.store.delete(old)
            return True

    def release(self, lease: Lease, *, committed: bool = False) -> None:
        """Mark the fragment finished (its file goes: the manifest says so now), or give it up
        (the file says "released", so the next taker looks for our checkpoints). A lease we no
        longer hold is left alone."""
        with self._lock:
            if lease.state != HELD or not self.valid(lease):
                return
            lease.state = COMMITTED if committed else RELEASED
            lease.expires_at = 0.0
            if committed:
                self.store.delete(lease.key)
                self.store.prune_dir(lease_dir(lease.table, lease.stage, lease.fragment))
            else:
                self.store.put(lease.key, lease.payload())

    def busy(self, table: str, stage: str) -> set[str]:
        """Fragment keys whose newest lease file was written within one TTL: probably held, so
        not worth a claim attempt. One listing for the whole stage, of live (or crashed)
        leases only (~1 request per 1,000 of them); the claim itself still decides."""
        newest: dict[str, tuple[int, datetime]] = {}
        for e in self.store.list(f"leases/{table}/{stage}"):
            d, name = e.key.rsplit("/", 1)
            if name.endswith(".json") and name[:-5].isdigit():
                g = int(name[:-5])
                if d not in newest or newest[d][0] < g:
                    newest[d] = (g, e.modified)
        horizon = datetime.now(UTC) - timedelta(seconds=self.ttl)
        return {d.rsplit("/", 1)[-1] for d, (_, modified) in newest.items() if modified > horizon}

    def release_dead(self, owner: str) -> int:
        """Free the leases of a worker whose process is known to have exited, so takers need
        not wait out its TTL. Only the dead owner's files are touched (it renews no more)."""
        freed = 0
        for cur in self.live():
            if cur.get("owner") == owner:
                cur.update(state=RELEASED, expires_at=0.0)
                key = lease_key(cur["table"], cur["stage"], cur["fragment"], cur["gen"])
                self.store.put(key, json.dumps(cur).encode())
                freed += 1
        return freed

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
        self.held: dict[tuple[str, str, str], Lease] = {}  # renewals change a lease's key
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sila-heartbeat", daemon=True)
        self.last_beat = time.time()

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def add(self, lease: Lease) -> None:
        with self._lock:
            self.held[(lease.table, lease.stage, lease.fragment)] = lease

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self.held.pop((lease.table, lease.stage, lease.fragment), None)

    def beat(self) -> None:
        with self._lock:
            leases = list(self.held.values())
        for lease in leases:
            try:
                if not self.leases.renew(lease) and lease.lost:
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
