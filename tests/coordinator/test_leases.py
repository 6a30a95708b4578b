"""The lease store under contention: at most one owner per generation, ever; expiry; fencing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from sila.coordinator.leases import COMMITTED, Heartbeat, LeaseStore
from sila.coordinator.store import Store


def test_threads_racing_for_one_fragment(tmp_path):
    store = Store(str(tmp_path))
    wins: list = []
    barrier = threading.Barrier(16)

    def race(i):
        ls = LeaseStore(store, ttl=30)
        barrier.wait()
        lease = ls.acquire("t", "s", "0-abc", owner=f"w{i}", job="j")
        if lease:
            wins.append(lease)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and wins[0].gen == 1


RACER = """
import json, sys, time
from sila.coordinator.store import Store
from sila.coordinator.leases import LeaseStore
root, me, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
ls = LeaseStore(Store(root), ttl=0.05)
got = []
deadline = time.time() + 6
while len(got) < rounds and time.time() < deadline:
    lease = ls.acquire("t", "s", "7-frag", owner=me, job="j")
    if lease:
        got.append(lease.gen)
        time.sleep(0.01)
print(json.dumps(got))
"""


def test_processes_racing_with_expiry_never_share_a_generation(tmp_path):
    """Four processes keep re-taking one fragment as its 50 ms lease expires."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), f"p{i}", "15"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    claimed = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    gens = [g for c in claimed for g in c]
    assert len(gens) == len(set(gens)), "a generation had two owners"
    assert len(gens) >= 10  # the fragment really changed hands many times


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.sampled_from(["acquire", "expire", "release", "commit", "renew"]),
        min_size=1,
        max_size=12,
    )
)
def test_generations_only_grow_and_owner_is_unique(tmp_path_factory, ops):
    store = Store(str(tmp_path_factory.mktemp("l")))
    ls = LeaseStore(store, ttl=60)
    held = None
    last_gen = 0
    for i, op in enumerate(ops):
        if op == "acquire":
            lease = ls.acquire("t", "s", "1-x", owner=f"o{i}", job="j")
            if held is not None and held.state == "held" and held.expires_at > time.time():
                assert lease is None  # live lease: nobody else gets it
            elif lease is not None:
                # generations grow while files exist; a commit removes them (gen restarts)
                assert lease.gen == (1 if held is None or held.state == COMMITTED else last_gen + 1)
                if held is not None:
                    assert not ls.still_owned(held) and not ls.renew(held)  # fenced out
                held, last_gen = lease, lease.gen
        elif held is not None and held.state == "held" and op == "expire":
            held.expires_at = time.time() - 1
            store.put(held.key, held.payload())
        elif held is not None and op == "renew":
            was = held.gen
            if ls.renew(held):
                assert held.gen == was + 1 and ls.still_owned(held)
                last_gen = held.gen
        elif held is not None and op == "release":
            ls.release(held)
        elif held is not None and op == "commit":
            ls.release(held, committed=True)
        live = ls.live()
        assert len(live) <= 1 and (not live or live[0]["owner"] == held.owner)


def test_heartbeat_keeps_a_lease_alive_and_detects_loss(tmp_path):
    store = Store(str(tmp_path))
    ls = LeaseStore(store, ttl=0.6)
    lease = ls.acquire("t", "s", "3-y", owner="a", job="j")
    hb = Heartbeat(ls, 0.1).start()
    hb.add(lease)
    time.sleep(1.2)  # two TTLs: without the heartbeat it would have expired
    assert ls.acquire("t", "s", "3-y", owner="b", job="j") is None
    hb.stop()
    time.sleep(0.8)
    thief = ls.acquire("t", "s", "3-y", owner="b", job="j")
    assert thief is not None and thief.gen == lease.gen + 1
    hb.beat()
    assert lease.lost and not ls.still_owned(lease)


def test_a_commit_removes_the_lease_file_and_the_next_taker_starts_over(tmp_path):
    store = Store(str(tmp_path))
    ls = LeaseStore(store, ttl=30)
    a = ls.acquire("t", "s", "4-z", owner="a", job="j")
    assert ls.renew(a) and a.gen == 2
    ls.release(a, committed=True)
    assert store.list("leases") == []  # the manifest says "done"; no file per fragment ever done
    b = ls.acquire("t", "s", "4-z", owner="b", job="j")
    assert b.previous_state is None and b.gen == 1
    assert ls.live() == [json.loads(b.payload())]
    assert not ls.renew(a) and not ls.still_owned(a)  # same gen number, other owner: fenced


def test_busy_lists_recently_written_leases_in_one_call(tmp_path):
    store = Store(str(tmp_path))
    ls = LeaseStore(store, ttl=0.5)
    ls.acquire("t", "s", "1-a", owner="a", job="j")
    ls.acquire("t", "s", "2-b", owner="a", job="j")
    before = Store.requests["list"]
    assert ls.busy("t", "s") == {"1-a", "2-b"}
    assert Store.requests["list"] - before == 1
    time.sleep(0.7)
    assert ls.busy("t", "s") == set()  # older than a TTL: worth a claim attempt again
