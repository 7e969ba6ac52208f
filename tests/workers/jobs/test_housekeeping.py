"""Housekeeping against a real Redis (and a real Cluster): dead letters older than the bound
are trimmed and younger ones kept; a consumer idle past the bound with nothing pending (a dead
worker's) leaves its group, one with pending entries or recently active stays; one sweep per
interval however many workers try. The timer in a real jobs worker, purging finished replays
after their retention: tests/integration/test_replay_housekeeping.py."""

from __future__ import annotations

import time

from shared import keys
from shared.redisio import add_dead_letter, ensure_group
from shared.settings import load_settings
from workers.jobs import housekeeping


def _dead_letters(r, n: int, tag: str) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        add_dead_letter(pipe, "pose", keys.frames_stream("cam-1"), f"1-{i}", {"x": tag}, "undecodable", 10000)
    pipe.execute()


def _server_now(r) -> float:
    return housekeeping.server_time(r, keys.DEADLETTER_STREAM)


def test_dead_letters_older_than_the_bound_are_trimmed_younger_ones_kept(r):
    _dead_letters(r, 5, "old")
    time.sleep(1.5)
    _dead_letters(r, 3, "new")
    assert r.xlen(keys.DEADLETTER_STREAM) == 5 + 3  # MAXLEN alone keeps them all
    assert housekeeping.trim_dead_letters(r, max_age_s=1.0) == 5
    left = [f[b"fields"] for _, f in r.xrange(keys.DEADLETTER_STREAM)]
    assert len(left) == 3 and all(b"new" in f for f in left)
    assert housekeeping.trim_dead_letters(r, max_age_s=1.0, now=_server_now(r) - 60) == 0  # idempotent


def test_dead_letters_on_a_cluster_are_trimmed_by_their_node_clock(rc):
    _dead_letters(rc, 4, "old")
    time.sleep(0.05)  # a millisecond apart at least: MINID keeps the entries of its own millisecond
    assert housekeeping.trim_dead_letters(rc, max_age_s=3600) == 0
    assert housekeeping.trim_dead_letters(rc, max_age_s=0) == 4 and rc.xlen(keys.DEADLETTER_STREAM) == 0


def test_idle_consumers_on_a_cluster_are_found_on_every_node(rc):
    streams = [keys.frames_stream(f"cam-{i}") for i in range(6)]  # spread over the primaries
    for stream in streams:
        ensure_group(rc, stream, keys.POSE_GROUP)
        rc.xadd(stream, {"seq": 0})
        _read(rc, stream, keys.POSE_GROUP, "pose-host-1", ack=True)
    time.sleep(0.3)
    removed = housekeeping.drop_idle_consumers(rc, idle_s=0.2)
    assert sorted(removed) == sorted(f"{s} pose/pose-host-1" for s in streams)


def _read(r, stream: str, group: str, consumer: str, ack: bool) -> None:
    for _, entries in r.xreadgroup(group, consumer, {stream: ">"}, count=1):
        for entry_id, _ in entries:
            if ack:
                r.xack(stream, group, entry_id)


def _consumers(r, stream: str, group: str) -> set[str]:
    return {c["name"].decode() for c in r.xinfo_consumers(stream, group)}


def test_idle_consumers_with_nothing_pending_leave_their_groups_others_stay(r):
    frames, events = keys.frames_stream("cam-1"), keys.EVENTS_STREAM
    for stream in (frames, events):
        ensure_group(r, stream, keys.POSE_GROUP if stream == frames else "alerts")
        for i in range(3):
            r.xadd(stream, {"seq": i})
    _read(r, frames, keys.POSE_GROUP, "pose-host-101", ack=True)  # a worker since dead, all acked
    _read(r, frames, keys.POSE_GROUP, "pose-host-102", ack=False)  # died holding an entry
    _read(r, events, "alerts", "alerts-old", ack=True)
    time.sleep(1.2)
    _read(r, frames, keys.POSE_GROUP, "pose-host-103", ack=True)  # alive: read just now
    removed = housekeeping.drop_idle_consumers(r, idle_s=1.0)
    assert sorted(removed) == sorted([f"{frames} pose/pose-host-101", f"{events} alerts/alerts-old"])
    assert _consumers(r, frames, keys.POSE_GROUP) == {"pose-host-102", "pose-host-103"}
    assert r.xpending(frames, keys.POSE_GROUP)["pending"] == 1  # the entry held is still pending
    assert _consumers(r, events, "alerts") == set()
    assert housekeeping.drop_idle_consumers(r, idle_s=1.0) == []  # idempotent


def test_one_sweep_per_interval_however_many_workers(r, redis_url):
    settings = load_settings(redis_url=redis_url, housekeeping_interval_s=2, deadletter_max_age_s=1)
    _dead_letters(r, 2, "old")
    time.sleep(1.2)
    keepers = [housekeeping.Housekeeper(r, settings, f"jobs-{i}") for i in range(3)]
    swept = [k.run_once() for k in keepers]
    assert [s is not None for s in swept] == [True, False, False]
    assert swept[0].dead_letters == 2 and r.get(housekeeping.LOCK_KEY) == b"jobs-0"
    time.sleep(2.2)  # the interval has passed: the next worker to try sweeps
    assert keepers[2].run_once() == housekeeping.Swept()


def test_a_dead_workers_heartbeat_is_gone_one_ttl_after_its_last_beat(r):
    from shared import heartbeat

    heartbeat.beat(r, "pose-host-7", "pose", {"frames": 1}, ["cam-1"], time.time(), ttl_s=0.5)  # then dies
    assert heartbeat.live_workers(r, "pose") == 1
    time.sleep(0.8)
    assert heartbeat.live_workers(r, "pose") == 0 and not r.exists(keys.worker_key("pose-host-7"))
