"""Leases, fencing and failover of the consumer loop: two and three StageWorkers on one real
Redis, with a small lease TTL (0.6 s); every wait is on a condition."""

from __future__ import annotations

import time

import pytest

from shared import keys
from shared.heartbeat import fair_share
from shared.leases import Leases, holder_of
from tests.shared.echo_stage import (EchoWorker, Running, echoed, owners, pending, publish, register,
                                     settings, wait_for)

CAMS = [f"cam-{i}" for i in range(6)]


@pytest.mark.parametrize("cameras,workers,share", [(6, 1, 6), (6, 2, 3), (6, 3, 2), (7, 3, 3), (0, 2, 0),
                                                   (5, 0, 5)])
def test_fair_share_is_an_even_split(cameras, workers, share):
    assert fair_share(cameras, workers, max_cameras=64) == share


@pytest.mark.parametrize("n_workers", [2, 3])
def test_workers_split_the_cameras_fairly_and_each_entry_is_echoed_once(r, redis_url, n_workers):
    register(r, CAMS)
    ids = {cam: publish(r, cam, 20) for cam in CAMS}
    workers = [EchoWorker(settings(redis_url), f"w{i}") for i in range(n_workers)]
    run = Running(*workers)
    try:
        share = len(CAMS) // n_workers
        wait_for(lambda: all(len(w.owned) == share for w in workers), what="a fair split")
        wait_for(lambda: all(len(echoed(r, c)) >= 20 for c in CAMS), what="every entry echoed")
        held = owners(r, CAMS)
        for w in workers:  # what a worker thinks it holds is what Redis says it holds
            assert {c for c, h in held.items() if h == w.worker_id} == w.owned
    finally:
        run.stop()
    for cam in CAMS:
        assert echoed(r, cam) == ids[cam] and pending(r, cam) == 0


def _own_one(redis_url, name, cams):
    w = EchoWorker(settings(redis_url), name, cameras=cams)
    w._connect()
    w.refresh_leases()  # no keeper thread: the lease lapses unless renewed by hand
    return w


def test_a_worker_whose_lease_was_taken_writes_nothing_and_acks_nothing(r, redis_url):
    register(r, ["cam-f"])
    ids = publish(r, "cam-f", 8)
    old = _own_one(redis_url, "old", ["cam-f"])
    assert old.owned == {"cam-f"}
    batch = old.read()  # delivered to old; then old stalls (a GC pause) past its TTL
    assert [e.id for e in batch] == ids
    wait_for(lambda: r.get(keys.lease_key(keys.POSE_GROUP, "cam-f")) is None, what="the lease to lapse")
    new = _own_one(redis_url, "new", ["cam-f"])
    assert new.owned == {"cam-f"}
    old.process(batch)  # wakes up and writes: refused by the fence
    assert echoed(r, "cam-f") == [] and r.get("actionstream:echo-state:{cam-f}") is None
    assert old.metrics["fenced"] == 1 and old.owned == set() and old.metrics["entries"] == 0
    assert pending(r, "cam-f") == 8  # nothing acked: the entries are the new owner's
    new.run(burst=True)
    assert echoed(r, "cam-f") == ids and pending(r, "cam-f") == 0


def test_takeover_reclaims_the_dead_owners_pending_entries(r, redis_url):
    register(r, ["cam-t"])
    ids = publish(r, "cam-t", 10)
    dead = _own_one(redis_url, "dead", ["cam-t"])
    dead.read()  # delivered, never acked: dead is killed here
    info = r.xpending_range(keys.frames_stream("cam-t"), keys.POSE_GROUP, "-", "+", 100)
    assert {p["consumer"] for p in info} == {b"dead"}
    wait_for(lambda: r.get(keys.lease_key(keys.POSE_GROUP, "cam-t")) is None, what="the lease to lapse")
    heir = EchoWorker(settings(redis_url), "heir", cameras=["cam-t"])
    heir.run(burst=True)
    assert echoed(r, "cam-t") == ids and pending(r, "cam-t") == 0
    assert heir.metrics["takeovers"] == 1


def test_after_a_redis_blip_a_worker_readopts_its_own_valid_leases(r, redis_url):
    register(r, ["cam-b"])
    w = _own_one(redis_url, "blip", ["cam-b"])
    before = w.leases.value("cam-b")
    w._on_disconnect(ConnectionError("blip"), 0)  # retry 0: drops its cameras; the lease is still there
    assert w.owned == set() and holder_of(r.get(keys.lease_key(keys.POSE_GROUP, "cam-b")).decode()) == "blip"
    w.refresh_leases()
    assert w.owned == {"cam-b"}  # not blocked by its own lease
    assert w.leases.value("cam-b") != before  # with a new fencing token
    assert r.get(keys.lease_key(keys.POSE_GROUP, "cam-b")).decode() == w.leases.value("cam-b")


def test_a_lease_held_by_another_worker_is_not_taken(r, redis_url):
    register(r, ["cam-x"])
    Leases(r, keys.POSE_GROUP, "other", 30).try_acquire("cam-x")
    w = _own_one(redis_url, "me", ["cam-x"])
    assert w.owned == set()


def test_heartbeats_and_leases_expire_together(r, redis_url):
    """A dead worker leaves the fair share when its leases lapse (one TTL), not later."""
    register(r, ["cam-h"])
    w = _own_one(redis_url, "hb", ["cam-h"])
    ttl_ms = int(w.settings.lease_ttl_s * 1000)
    assert 0 < r.pttl(keys.worker_key("hb")) <= ttl_ms
    assert 0 < r.pttl(keys.lease_key(keys.POSE_GROUP, "cam-h")) <= ttl_ms


@pytest.mark.parametrize("ttl", [0.6, 1.2])
def test_failover_takes_the_dead_workers_cameras(r, redis_url, ttl, record_property):
    register(r, CAMS[:4])
    a, b = (EchoWorker(settings(redis_url, lease_ttl_s=ttl), name) for name in ("a", "b"))
    run = Running(a, b)
    try:
        wait_for(lambda: len(a.owned) == 2 and len(b.owned) == 2, what="a fair split")
        t0 = time.monotonic()
        a.crash()
        wait_for(lambda: len(b.owned) == 4, what="b to take a's cameras")
        record_property("failover_s", round(time.monotonic() - t0, 3))  # the figure; not asserted
        record_property("lease_ttl_s", ttl)
        ids = {c: publish(r, c, 5) for c in CAMS[:4]}
        wait_for(lambda: all(echoed(r, c) == ids[c] for c in CAMS[:4]), what="b to echo every camera")
    finally:
        run.stop()


def test_each_acquisition_gets_a_new_token_and_a_stale_holder_cannot_renew_or_release(r):
    first = Leases(r, keys.POSE_GROUP, "w1", 30)
    assert first.try_acquire("cam-k")
    stale = first.value("cam-k")
    r.delete(keys.lease_key(keys.POSE_GROUP, "cam-k"))  # lapsed
    second = Leases(r, keys.POSE_GROUP, "w2", 30)
    assert second.try_acquire("cam-k") and not first.try_acquire("cam-k")
    assert int(second.value("cam-k").rpartition("|")[2]) > int(stale.rpartition("|")[2])
    first.values["cam-k"] = stale  # w1 still believes it holds the lease
    assert not first.renew("cam-k")
    first.values["cam-k"] = stale
    first.release("cam-k")
    assert second.holder("cam-k") == "w2" and second.renew("cam-k")


@pytest.mark.parametrize("value,worker", [("pose-h-1|7", "pose-h-1"), ("a|b|12", "a|b"), ("legacy", "legacy"),
                                          (None, None)])
def test_the_holder_inside_a_lease_value(value, worker):
    assert holder_of(value) == worker


def test_a_worker_does_not_adopt_a_lease_of_a_worker_whose_id_extends_its_own(r):
    assert Leases(r, keys.POSE_GROUP, "a|b", 30).try_acquire("cam-p")
    assert not Leases(r, keys.POSE_GROUP, "a", 30).try_acquire("cam-p")
