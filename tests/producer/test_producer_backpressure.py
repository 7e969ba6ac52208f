"""Replay-mode backpressure counts every consumer group of the frame stream: with an
``archive`` group whose archiver has stopped, the producer waits (the stream stays bounded,
a warning names the group, the gauge shows it) instead of growing the stream without bound,
though the pose stage keeps up; once the archive reads again, every frame comes, once."""

from __future__ import annotations

import logging
import threading
import time

from producer.producer import Producer
from shared import keys, metrics
from shared.redisio import ensure_group, group_lag
from shared.settings import load_settings, make_camera
from tests.conftest import shared_path

CAM = "cam-archived"
LIMIT = 5
FRAMES = 30


def _consume(r, stream: str, group: str, stop: threading.Event, got: list) -> None:
    while not stop.is_set():
        for _, entries in r.xreadgroup(group, f"{group}-1", {stream: ">"}, count=1, block=100) or []:
            for entry_id, _ in entries:
                r.xack(stream, group, entry_id)
                got.append(entry_id)


def test_a_stopped_archiver_holds_the_producer_back_instead_of_growing_the_stream(r, redis_url, caplog):
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    settings = load_settings(redis_url=redis_url, mode="replay", replay_max_lag=LIMIT)
    stream = keys.frames_stream(CAM)
    ensure_group(r, stream, keys.POSE_GROUP)
    ensure_group(r, stream, keys.ARCHIVE_GROUP)  # as a producer does while an archiver is alive
    producer = Producer(settings, make_camera(id=CAM, source=video, width=80))
    stop, posed, archived = threading.Event(), [], []
    pose = threading.Thread(target=_consume, args=(r, stream, keys.POSE_GROUP, stop, posed), daemon=True,
                            name="consume-pose")
    pose.start()
    run = threading.Thread(target=producer.run, kwargs={"max_frames": FRAMES}, daemon=True)
    caplog.set_level(logging.WARNING, logger="producer.producer")
    try:
        run.start()
        deadline = time.monotonic() + 60  # a hang guard
        while len(posed) < LIMIT and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the pose stage keeps up; only the archive is behind
        assert run.is_alive() and producer.stats["state"] == "waiting (backpressure)"
        assert r.xlen(stream) == LIMIT == group_lag(r, stream, keys.ARCHIVE_GROUP) == len(posed)
        assert metrics.STREAM_BEHIND.labels(stream, keys.ARCHIVE_GROUP)._value.get() == LIMIT
        assert any("consumer group 'archive'" in m for m in caplog.messages), caplog.messages

        archive = threading.Thread(target=_consume, args=(r, stream, keys.ARCHIVE_GROUP, stop, archived),
                                   daemon=True, name="consume-archive")
        archive.start()  # the archiver is back
        run.join(60)
        assert not run.is_alive()
        deadline = time.monotonic() + 30
        while len(archived) < FRAMES + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threading.enumerate():
            if thread.name.startswith("consume-"):
                thread.join(5)
    assert len(posed) == len(archived) == r.xlen(stream) == FRAMES + 1  # every frame and the end, once
    assert metrics.STREAM_BEHIND.labels(stream, keys.ARCHIVE_GROUP)._value.get() == 0
