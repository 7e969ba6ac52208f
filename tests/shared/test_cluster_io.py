"""The stream loop's Redis parts on a real Redis Cluster (3 primaries, 3 replicas): reads
across slots with the server's time, fenced writes per node, leases, heartbeats, WAIT."""

from __future__ import annotations

import threading
import time

from redis.crc import key_slot

from shared import heartbeat, keys, writing
from shared.leases import Leases
from shared.reading import Entry, read_group
from shared.redisio import ensure_group, xread_any
from shared.writing import Outcome, Output

CAMERAS = ("cam-a", "cam-1", "cam-b")  # one on each primary (slots 3439, 6042, 15628)


def _feed(rc, per_camera: int = 3) -> None:
    for cam in CAMERAS:
        ensure_group(rc, keys.frames_stream(cam), keys.POSE_GROUP)
        for i in range(per_camera):
            rc.xadd(keys.frames_stream(cam), {"i": i})


def test_the_cameras_sit_on_three_primaries(cluster):
    assert len({cluster.primary_port(key_slot(c.encode())) for c in CAMERAS}) == 3


def test_read_group_reads_every_slot_with_server_ages(rc):
    _feed(rc)
    streams = {keys.frames_stream(c): ">" for c in CAMERAS}
    got = read_group(rc, keys.POSE_GROUP, "w1", streams, count=10, block=None)
    assert sorted((e.camera, int(e.fields[b"i"])) for e in got) == [(c, i) for c in sorted(CAMERAS)
                                                                     for i in range(3)]
    assert all(e.age_s is not None and 0 <= e.age_s < 5 for e in got)
    assert read_group(rc, keys.POSE_GROUP, "w1", streams, count=10, block=None) == []
    pending = {c: rc.xpending(keys.frames_stream(c), keys.POSE_GROUP)["pending"] for c in CAMERAS}
    assert pending == {c: 3 for c in CAMERAS}  # delivered to w1 on every node


def test_read_group_count_is_per_stream(rc):
    _feed(rc, per_camera=5)
    got = read_group(rc, keys.POSE_GROUP, "w1", {keys.frames_stream(c): ">" for c in CAMERAS}, count=2,
                     block=None)
    assert sorted(e.camera for e in got) == sorted(CAMERAS * 2)


def test_a_blocking_read_wakes_for_an_entry_on_any_node(rc):
    _feed(rc, per_camera=0)
    streams = {keys.frames_stream(c): ">" for c in CAMERAS}
    late = threading.Timer(0.3, lambda: rc.xadd(keys.frames_stream("cam-b"), {"i": 7}))
    late.start()
    t0 = time.monotonic()
    got = read_group(rc, keys.POSE_GROUP, "w1", streams, count=10, block=3000)
    late.join()
    assert [(e.camera, e.fields[b"i"]) for e in got] == [("cam-b", b"7")]
    assert time.monotonic() - t0 < 2.5  # woke for it, did not wait out the block
    assert read_group(rc, keys.POSE_GROUP, "w1", streams, count=10, block=200) == []


def test_xread_any_reads_across_slots(rc):
    _feed(rc, per_camera=2)
    streams = {keys.frames_stream(c): "0" for c in CAMERAS}
    got = {stream.decode(): len(entries) for stream, entries in xread_any(rc, streams, count=10, block=None)}
    assert got == {keys.frames_stream(c): 2 for c in CAMERAS}


def _batch(rc, leases: Leases) -> tuple[writing.Plan, list[Entry]]:
    streams = {keys.frames_stream(c): ">" for c in CAMERAS}
    entries = read_group(rc, keys.POSE_GROUP, "w1", streams, count=10, block=None)
    out = Outcome(outputs=[Output(keys.skeletons_stream(e.camera), {"from": e.id}) for e in entries],
                  done=entries, sets={keys.tracker_state_key(c): "s" for c in CAMERAS})
    return writing.plan(out, keys.POSE_GROUP, dict(leases.values)), entries


def test_fenced_writes_go_to_each_cameras_node_and_a_lost_lease_writes_nothing(rc):
    _feed(rc, per_camera=2)
    leases = Leases(rc, keys.POSE_GROUP, "w1", ttl_s=30)
    assert all(leases.try_acquire(c) for c in CAMERAS)
    rc.set(keys.lease_key(keys.POSE_GROUP, "cam-1"), "w2|99")  # another worker took cam-1
    p, _ = _batch(rc, leases)
    script = rc.register_script(writing.FENCED_WRITE)
    results = writing.execute_fenced(rc, script, p)
    assert results == {"cam-a": writing.OK, "cam-1": writing.FENCED, "cam-b": writing.OK}
    for cam in CAMERAS:
        written = rc.xlen(keys.skeletons_stream(cam))
        pending = rc.xpending(keys.frames_stream(cam), keys.POSE_GROUP)["pending"]
        assert (written, pending) == ((0, 2) if cam == "cam-1" else (2, 0)), cam
        assert (rc.get(keys.tracker_state_key(cam)) is None) == (cam == "cam-1")


def test_wait_reports_the_replicas_that_have_the_batch(rc):
    _feed(rc, per_camera=1)
    leases = Leases(rc, keys.POSE_GROUP, "w1", ttl_s=30)
    assert all(leases.try_acquire(c) for c in CAMERAS)
    p, _ = _batch(rc, leases)
    results = writing.execute_fenced(rc, rc.register_script(writing.FENCED_WRITE), p, wait_replicas=1,
                                     wait_ms=2000)
    assert results.pop(writing.REPLICATED) == 1  # each node's one replica acknowledged
    assert results == {c: writing.OK for c in CAMERAS}


def test_leases_and_heartbeats_on_a_cluster(cluster, rc):
    a = Leases(rc, keys.ACTION_GROUP, "w1", ttl_s=30)
    b = Leases(rc, keys.ACTION_GROUP, "w2", ttl_s=30)
    assert [a.try_acquire(c) for c in CAMERAS] == [True] * 3
    assert [b.try_acquire(c) for c in CAMERAS] == [False] * 3
    assert {a.holder(c) for c in CAMERAS} == {"w1"}
    a.release("cam-b")
    assert b.try_acquire("cam-b") and b.holder("cam-b") == "w2"
    # worker keys land on different primaries: the scan must visit every one
    ids = [f"w{i}" for i in range(12)]
    assert len({cluster.primary_port(key_slot(keys.worker_key(w).encode())) for w in ids}) == 3
    for wid in ids:
        heartbeat.beat(rc, wid, "pose" if wid != "w0" else "action", {}, [], at=0.0, ttl_s=30)
    assert heartbeat.live_workers(rc, "pose") == 11
    assert heartbeat.live_workers(rc, "action") == 1
