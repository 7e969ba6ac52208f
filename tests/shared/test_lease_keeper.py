"""The lease keeper on its own (ARCHITECTURE.md, invariant 2): on a real Redis, with a lease
TTL of 0.6 s (renewed every 0.15 s); every wait is on a condition."""

from __future__ import annotations

import logging

from shared import keys
from shared.leases import LeaseKeeper, Leases, renew_period_s
from tests.shared.echo_stage import EchoWorker, publish, register, settings, wait_for

TTL = 0.6


def _lease(r, camera: str):
    raw = r.get(keys.lease_key(keys.POSE_GROUP, camera))
    return raw.decode() if raw is not None else None


class Beats:
    def __init__(self, fail: int = 0) -> None:
        self.n = 0
        self.fail = fail  # the first rounds raise

    def __call__(self) -> None:
        self.n += 1
        if self.n <= self.fail:
            raise RuntimeError("a round that fails")


def _keeper(leases: Leases, held: set[str], beat=None) -> LeaseKeeper:
    k = LeaseKeeper(lambda: set(held), renew_period_s(TTL), beat=beat or Beats(), name="w1-leases")
    k.leases = leases
    return k


def test_the_renew_period_is_a_quarter_of_the_ttl_at_most_two_seconds():
    assert renew_period_s(0.6) == 0.15 and renew_period_s(8) == 2.0 and renew_period_s(30) == 2.0


def test_the_keeper_renews_the_leases_held_before_they_expire(r):
    leases = Leases(r, keys.POSE_GROUP, "w1", TTL)
    assert leases.try_acquire("cam-a") and leases.try_acquire("cam-b") and leases.try_acquire("cam-c")
    tokens = {c: leases.value(c) for c in ("cam-a", "cam-b")}
    beats = Beats()
    keeper = _keeper(leases, {"cam-a", "cam-b"}, beats)  # cam-c is not held: not renewed
    keeper.start()
    try:
        wait_for(lambda: _lease(r, "cam-c") is None, what="the lease not held to lapse")
        wait_for(lambda: beats.n >= 12, what="rounds over three TTLs")  # 12 x 0.15 s = 3 x 0.6 s
        assert {c: _lease(r, c) for c in tokens} == tokens  # still ours, with the same fencing tokens
        assert all(0 < r.pttl(keys.lease_key(keys.POSE_GROUP, c)) <= TTL * 1000 for c in tokens)
        assert keeper.take_lost() == set()
    finally:
        keeper.stop()
    assert not keeper._thread.is_alive()
    n = beats.n
    wait_for(lambda: _lease(r, "cam-a") is None, what="the lease to lapse once the keeper stopped")
    assert beats.n == n  # no more rounds


def test_the_keeper_reports_a_lease_that_another_owner_took(r):
    mine = Leases(r, keys.POSE_GROUP, "w1", TTL)
    assert mine.try_acquire("cam-x") and mine.try_acquire("cam-y")
    keeper = _keeper(mine, {"cam-x", "cam-y"})
    keeper.start()
    try:
        r.delete(keys.lease_key(keys.POSE_GROUP, "cam-x"))  # lapsed (a long pause) ...
        other = Leases(r, keys.POSE_GROUP, "w2", TTL)
        assert other.try_acquire("cam-x")  # ... and taken, with a newer token
        lost: set[str] = set()
        wait_for(lambda: lost.update(keeper.take_lost()) or lost, what="the loss to be reported")
        assert lost == {"cam-x"}
        assert mine.value("cam-x") == ""  # forgotten: no fenced write can pass with it
        assert _lease(r, "cam-x") == other.value("cam-x")  # the keeper did not touch the new owner's
        assert _lease(r, "cam-y") == mine.value("cam-y")  # and kept the other one
    finally:
        keeper.stop()


def test_a_failing_round_does_not_stop_the_keeper(r, caplog):
    leases = Leases(r, keys.POSE_GROUP, "w1", TTL)
    assert leases.try_acquire("cam-e")
    beats = Beats(fail=2)
    keeper = _keeper(leases, {"cam-e"}, beats)
    with caplog.at_level(logging.ERROR, logger="shared.leases"):
        keeper.start()
        try:
            wait_for(lambda: beats.n >= 10, what="rounds after the failures")
            assert _lease(r, "cam-e") == leases.value("cam-e")
        finally:
            keeper.stop()
    assert sum("lease keeper failed" in m for m in caplog.messages) == 2


def test_the_worker_drops_a_camera_whose_lease_the_keeper_lost(r, redis_url, caplog):
    register(r, ["cam-l"])
    publish(r, "cam-l", 3)
    w = EchoWorker(settings(redis_url), "w1", cameras=["cam-l"])
    w._connect()
    w.refresh_leases()
    assert w.owned == {"cam-l"} and w.keeper.period_s == renew_period_s(w.settings.lease_ttl_s)
    r.delete(keys.lease_key(keys.POSE_GROUP, "cam-l"))
    assert Leases(r, keys.POSE_GROUP, "w2", 30).try_acquire("cam-l")
    w.keeper.renew_once()  # the keeper's round, here in this thread
    with caplog.at_level(logging.WARNING, logger="shared.worker"):
        assert w.tick() == 0  # dropped before reading: nothing read for it
    assert w.owned == set() and "cam-l" not in w.backlog
    assert any("lost the lease on camera cam-l" in m for m in caplog.messages)
