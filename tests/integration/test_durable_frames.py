"""Durable frames on a single server (``ACTIONSTREAM_DURABLE_FRAMES`` with
``ACTIONSTREAM_REDIS_WAIT_AOF``): a real producer reading a real clip moves on to the next frame
only once WAITAOF confirmed the last one on disk. While the server cannot confirm (AOF off) the
first frame is written again and again, never twice in the stream, never skipped, and each
failed confirmation is counted; once AOF is on the run completes; then the server is killed
(SIGKILL) right after the end of stream and restarted on the same append-only file: every
frame is there, once, in order."""

from __future__ import annotations

import threading

import pytest
import redis

from producer.producer import Producer
from shared import codec, keys, metrics
from shared.redis_server import RedisServer
from shared.settings import load_settings, make_camera
from tests.conftest import shared_path
from tests.integration.test_durable_events import _kill9, _wait

pytestmark = pytest.mark.integration
CAM = "cam-durable"
FRAMES = 20


def _waits(outcome: str) -> float:
    return metrics.DURABLE_WAITS.labels("frames", outcome)._value.get()


def _seqs(r) -> list:
    msgs = [codec.decode_frame(f) for _, f in r.xrange(keys.frames_stream(CAM))]
    return [(type(m).__name__, m.seq) for m in msgs]


def test_the_producer_moves_on_only_once_a_frame_is_on_disk_and_frames_survive_a_kill_9(tmp_path):
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    data = tmp_path / "redis"
    server = RedisServer(data_dir=data, persist=False).start()  # AOF off: WAITAOF cannot confirm
    try:
        r = redis.Redis.from_url(server.url)
        settings = load_settings(redis_url=server.url, mode="replay", replay_max_lag=1000,
                                 durable_frames=True, redis_wait_aof=True, redis_wait_ms=50)
        producer = Producer(settings, make_camera(id=CAM, source=video, width=80))
        start, confirmed = _waits("unconfirmed"), _waits("confirmed")
        thread = threading.Thread(target=producer.run, kwargs={"max_frames": FRAMES}, daemon=True)
        thread.start()
        _wait(lambda: _waits("unconfirmed") >= start + 10)
        assert _seqs(r) == [("Frame", 0)]  # written again each time, added once, the next one waits
        assert producer.stats["unconfirmed"] >= 10 and producer.stats["state"] == "waiting (durability)"
        assert _waits("confirmed") == confirmed

        r.config_set("appendonly", "yes")  # the operator turns AOF on: the retries now confirm
        thread.join(timeout=120)
        assert not thread.is_alive()
        expected = [("Frame", s) for s in range(FRAMES)] + [("EndOfStream", FRAMES)]
        assert _seqs(r) == expected
        assert _waits("confirmed") >= confirmed + FRAMES + 1
        before = r.xrange(keys.frames_stream(CAM))

        _kill9(server)  # right after the end of stream: no clean shutdown, no final fsync
        server = RedisServer(port=server.port, data_dir=data, persist=True).start()
        r = redis.Redis.from_url(server.url)
        assert r.xrange(keys.frames_stream(CAM)) == before
        assert int(r.hget(keys.producer_key(CAM), "seq")) == FRAMES
    finally:
        server.cleanup()


def test_without_the_setting_frames_are_not_waited_on(tmp_path):
    """The default: nothing confirmed, the run completes with AOF off (nothing to wait for)."""
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    server = RedisServer(data_dir=tmp_path / "redis", persist=False).start()
    try:
        r = redis.Redis.from_url(server.url)
        settings = load_settings(redis_url=server.url, mode="replay", replay_max_lag=1000,
                                 redis_wait_aof=True)
        before = _waits("unconfirmed") + _waits("confirmed")
        assert Producer(settings, make_camera(id=CAM, source=video, width=80)).run(max_frames=5) == 0
        assert [s for kind, s in _seqs(r) if kind == "Frame"] == list(range(5))
        assert _waits("unconfirmed") + _waits("confirmed") == before
    finally:
        server.cleanup()


def test_a_replay_job_moves_on_only_once_an_item_is_on_disk(tmp_path):
    """The replay job's own frames (durable_frames): while the server cannot confirm, the first
    item is published once and the job waits on it; with AOF on, every item once, in order."""
    from workers.jobs import registry
    from workers.jobs.replay import JobSpec
    from workers.jobs.runner import JobRunner, Stopping

    server = RedisServer(data_dir=tmp_path / "redis", persist=False).start()  # AOF off
    try:
        r = redis.Redis.from_url(server.url)
        spec = JobSpec(job="dj", camera="clip", source="video", target="pose", created=1.0,
                       path=str(shared_path("data", "urfd", "fall-16-cam0.mp4")))
        registry.register(r, spec)
        settings = load_settings(redis_url=server.url, replay_max_lag=100000, lease_ttl_s=5,
                                 durable_frames=True, redis_wait_aof=True, redis_wait_ms=50)
        stream = keys.frames_stream(spec.replay_camera)
        start = _waits("unconfirmed")
        runner = JobRunner(r, settings, spec, stopping=lambda: _waits("unconfirmed") >= start + 5)
        with pytest.raises(Stopping):
            runner.run()
        assert [codec.decode_frame(f).seq for _, f in r.xrange(stream)] == [0]  # once, and it waited
        r.config_set("appendonly", "yes")
        r.hset(keys.done_key(keys.ACTION_GROUP), spec.replay_camera, 55)  # the stages' part
        summary = JobRunner(r, settings, spec).run()
        assert summary["state"] == "DONE" and summary["published"] == 55
        seqs = [codec.decode_frame(f).seq for _, f in r.xrange(stream)]
        assert seqs == list(range(55)) + [55]  # every frame once, then the end of stream
    finally:
        server.stop()
