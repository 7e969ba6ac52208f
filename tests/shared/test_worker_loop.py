"""The consumer loop's batch handling on a real Redis: bisection of failing batches,
delivery counts, checked writes (nothing acked after a failed XADD), server-side ages."""

from __future__ import annotations

import pytest

from shared import keys, writing
from shared.reading import Entry
from shared.writing import Outcome, Output
from tests.shared.echo_stage import (EchoWorker, echo_stream, echoed, pending, publish, register,
                                     settings, state_key)

CAMS = ["cam-0", "cam-1", "cam-2", "cam-3"]


def _dead(r):
    from shared import codec

    return [codec.decode_dead_letter(f) for _, f in r.xrange(keys.DEADLETTER_STREAM)]


@pytest.mark.parametrize("fail,dead", [("always", True), ("1", False), ("2", False)])
def test_one_bad_entry_among_64_across_cameras(r, redis_url, fail, dead):
    """Bisection: only a poison entry is dead-lettered (after max_attempts), a flaky one is
    retried until it passes; its camera's order holds and the attempts are cleared."""
    register(r, CAMS)
    ids = {cam: publish(r, cam, 16, **({"7": {"fail": fail}} if cam == "cam-2" else {})) for cam in CAMS}
    bad = ids["cam-2"][7]
    w = EchoWorker(settings(redis_url, batch_per_camera=16, max_batch=64), "w")
    w.run(burst=True)
    dead_letters = _dead(r)
    if dead:
        assert [d.message_id for d in dead_letters] == [bad]
        assert "failed 3 times" in dead_letters[0].reason and "poison" in dead_letters[0].reason
        assert echoed(r, "cam-2") == [i for i in ids["cam-2"] if i != bad]
    else:
        assert dead_letters == [] and echoed(r, "cam-2") == ids["cam-2"]
        assert w.calls[f"cam-2/{bad}"] == int(fail) + 1
    for cam in ("cam-0", "cam-1", "cam-3"):
        assert echoed(r, cam) == ids[cam]
        assert all(w.calls[f"{cam}/{i}"] <= 7 for i in ids[cam])  # bisected: 1 + log2(64) tries
    assert all(pending(r, c) == 0 for c in CAMS)
    assert w.attempts == {}  # cleared after success (and after dead-lettering)
    assert w.metrics["dead"] == int(dead)


def test_an_entry_delivered_too_often_is_dead_lettered_without_handling(r, redis_url):
    """Delivery counts: an entry that keeps killing workers (delivered > max_deliveries)
    goes to the dead letters; claiming (JUSTID) does not count as a delivery."""
    register(r, ["cam-d"])
    ids = publish(r, "cam-d", 3)
    stream = keys.frames_stream("cam-d")
    r.xgroup_create(stream, keys.POSE_GROUP, id="0")
    r.xreadgroup(keys.POSE_GROUP, "ghost", {stream: ">"}, count=1)
    for _ in range(9):  # nine more deliveries of the first entry to workers that died
        r.xreadgroup(keys.POSE_GROUP, "ghost", {stream: "0"}, count=1)
    w = EchoWorker(settings(redis_url), "w")
    w.max_deliveries = 10
    w.run(burst=True)  # the claim keeps the count at 10; the read makes it 11
    assert [d.message_id for d in _dead(r)] == [ids[0]]
    assert "delivered 11 times" in _dead(r)[0].reason
    assert f"cam-d/{ids[0]}" not in w.calls and echoed(r, "cam-d") == ids[1:]
    assert pending(r, "cam-d") == 0


def _break_stream(r, cam):
    r.set(echo_stream(cam), "not a stream")  # XADD to it fails: WRONGTYPE


def _fill_memory(r, cam):
    r.config_set("maxmemory", 1)  # every write fails: OOM


@pytest.mark.parametrize("breaker", [_break_stream, _fill_memory])
def test_a_failed_write_acks_nothing_and_is_retried(r, redis_url, breaker):
    register(r, ["cam-w"])
    ids = publish(r, "cam-w", 4)
    w = EchoWorker(settings(redis_url), "w", cameras=["cam-w"])
    w._connect()
    w.refresh_leases()
    batch = w.read()
    breaker(r, "cam-w")
    try:
        w.process(batch)  # a ResponseError is caught: logged, nothing acked
    finally:
        r.config_set("maxmemory", 0)
    assert pending(r, "cam-w") == 4 and w.metrics["errors"] == 1
    assert r.get(state_key("cam-w")) is None  # the state is not written before the outputs
    assert w.owned == {"cam-w"} and "cam-w" in w.backlog
    r.delete(echo_stream("cam-w"))
    w.process(w.read())  # the retry reads the camera's pending entries again
    assert echoed(r, "cam-w") == ids and pending(r, "cam-w") == 0


def test_entry_ages_come_from_the_server_clock(r, redis_url):
    """Staleness is measured from entry ids (server time), not from a message's timestamp."""
    register(r, ["cam-s"])
    now_ms = int(r.time()[0]) * 1000
    stream = keys.frames_stream("cam-s")
    old = r.xadd(stream, {"n": 0}, id=f"{now_ms - 60_000}-0").decode()  # waited a minute
    new = r.xadd(stream, {"n": 1}).decode()
    w = EchoWorker(settings(redis_url), "w")
    w.run(burst=True)
    assert w.ages[f"cam-s/{old}"] >= 59 and w.ages[f"cam-s/{new}"] < 59


def _entry(cam, i, stream=None):
    return Entry(stream or keys.frames_stream(cam), cam, f"1-{i}", {"n": i})


def test_the_write_plan_fences_per_camera_and_acks_last():
    a0, a1, b0 = _entry("a", 0), _entry("a", 1), _entry("b", 0)
    out = Outcome(outputs=[Output(echo_stream("a"), {"src": "1-0"}, maxlen=5),
                           Output(keys.EVENTS_STREAM, {"event": "{}"})],
                  dead=[(b0, "bad")], done=[a0, a1], sets={state_key("a"): "1-1", "global": "x"})
    p = writing.plan(out, keys.POSE_GROUP, {"a": "w|3", "b": "w|4"})
    assert [o.stream for o in p.global_outputs] == [keys.EVENTS_STREAM]
    assert p.global_sets == {"global": "x"} and [e for e, _ in p.dead] == [b0]
    a, b = p.cameras["a"], p.cameras["b"]
    assert a.keys[0] == keys.lease_key(keys.POSE_GROUP, "a") and a.args[0] == "w|3"
    assert {keys.hash_tag(k) for k in a.keys} == {"a"} and {keys.hash_tag(k) for k in b.keys} == {"b"}
    ops = [x for x in a.args if x in ("X", "S", "A")]
    assert ops == ["X", "S", "A"]  # outputs, then state, then acks
    assert a.args[-2:] == ["1-0", "1-1"] and b.args == ["w|4", "A", 2, keys.POSE_GROUP, 1, "1-0"]


def test_a_camera_without_a_lease_is_fenced(r, redis_url):
    register(r, ["cam-n"])
    publish(r, "cam-n", 2)
    w = EchoWorker(settings(redis_url), "w", cameras=["cam-n"])
    w._connect()
    w.refresh_leases()
    batch = w.read()
    w.leases.forget("cam-n")  # as if the keeper had found the lease gone
    w.process(batch)
    assert echoed(r, "cam-n") == [] and pending(r, "cam-n") == 2 and w.metrics["fenced"] == 1


def test_a_full_redis_does_not_stop_the_worker(r, redis_url):
    """Every write refused (OOM) for a while: logged and retried, not a crash."""
    from tests.shared.echo_stage import Running, wait_for

    register(r, ["cam-o"])
    ids = publish(r, "cam-o", 3)
    w = EchoWorker(settings(redis_url), "w")
    r.config_set("maxmemory", 1)
    run = Running(w)
    try:
        wait_for(lambda: w.metrics["errors"] >= 2, what="refused commands")
        assert run.threads[0].is_alive()
    finally:
        r.config_set("maxmemory", 0)
    try:
        wait_for(lambda: echoed(r, "cam-o") == ids, what="the entries once Redis takes writes")
    finally:
        run.stop()
    assert pending(r, "cam-o") == 0
