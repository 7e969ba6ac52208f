"""Durable events on a single server: a real ActionWorker (the shipped fall model, real URFD
skeletons) with ``redis_wait_aof`` acknowledges its skeletons only once WAITAOF confirmed its
events on disk. While the server cannot confirm (AOF off) nothing is acked and the failed
confirmations are counted; once AOF is on the run completes; then the server is killed
(SIGKILL) right after the last event and restarted on the same append-only file: every event
a subscriber could have seen is there, none twice, and no skeleton needs processing again."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
import redis

from shared import keys, metrics
from shared.redis_server import RedisServer
from shared.redisio import group_lag
from tests.integration import test_action_takeover as takeover
from tests.workers.action.realclips import shipped_classifier
from workers.action.worker import ActionWorker, rules_from_settings

pytestmark = pytest.mark.integration
CAM = takeover.CAM


def _kill9(server: RedisServer) -> None:
    pid = redis.Redis.from_url(server.url).info("server")["process_id"]
    os.kill(int(pid), signal.SIGKILL)
    end = time.monotonic() + 30  # a hang guard
    while True:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=0.2).close()
        except OSError:
            return
        assert time.monotonic() < end
        time.sleep(0.05)


def _unconfirmed() -> float:
    return metrics.DURABLE_WAITS.labels("events", "unconfirmed")._value.get()


def _wait(what, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout  # a hang guard
    while not what():
        assert time.monotonic() < end
        time.sleep(0.05)


def test_events_are_acknowledged_only_on_disk_and_survive_a_kill_9(tmp_path):
    classifier = shipped_classifier()
    data = tmp_path / "redis"
    server = RedisServer(data_dir=data, persist=False).start()  # AOF off: WAITAOF cannot confirm
    try:
        r = redis.Redis.from_url(server.url)
        entries = takeover._load(r)
        settings = takeover._settings(server.url, 8).model_copy(update={"redis_wait_aof": True,
                                                                         "redis_wait_ms": 50})
        worker = ActionWorker(settings, classifier, rules_from_settings(settings, classifier.card.labels),
                              cameras=[CAM], worker_id="action-durable")
        start = _unconfirmed()
        thread = threading.Thread(target=worker.run, kwargs={"exit_on_eos": True}, daemon=True)
        thread.start()
        _wait(lambda: _unconfirmed() >= start + 3 and r.xlen(keys.EVENTS_STREAM) > 0)
        # events written, none confirmed: the batch that made the first one is never acked (the
        # batches before it, which made none, were), however often it is retried
        lag = group_lag(r, keys.skeletons_stream(CAM), keys.ACTION_GROUP)
        _wait(lambda: _unconfirmed() >= start + 10)
        assert group_lag(r, keys.skeletons_stream(CAM), keys.ACTION_GROUP) == lag > 0
        first = min(takeover.json.loads(f[b"event"])["frame_end"] for _, f in r.xrange(keys.EVENTS_STREAM))
        state = r.get(keys.action_state_key(CAM))
        assert state is None or takeover.json.loads(state)["windows"]["last_seq"] < first
        assert entries > lag

        r.config_set("appendonly", "yes")  # the operator turns AOF on: the retries now confirm
        thread.join(timeout=300)
        assert not thread.is_alive()
        before = [(eid, f[b"event"]) for eid, f in r.xrange(keys.EVENTS_STREAM)]
        ids = [takeover.json.loads(raw)["id"] for _, raw in before]
        assert len(ids) >= 5 and len(set(ids)) == len(ids)
        assert group_lag(r, keys.skeletons_stream(CAM), keys.ACTION_GROUP) == 0

        _kill9(server)  # right after the last event: no clean shutdown, no final fsync
        server = RedisServer(port=server.port, data_dir=data, persist=True).start()
        r = redis.Redis.from_url(server.url)
        assert [(eid, f[b"event"]) for eid, f in r.xrange(keys.EVENTS_STREAM)] == before
        assert group_lag(r, keys.skeletons_stream(CAM), keys.ACTION_GROUP) == 0
    finally:
        server.cleanup()
