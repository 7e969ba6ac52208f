"""Housekeeping by the jobs workers' own timers: two real ``actionstream jobs-worker``
processes on a real Redis, a replay cancelled mid-way and another still running. The
cancelled one is kept for its retention, then purged (its keys, registry entries and Celery
result) by exactly one of the two workers; the running one is left alone; a dead letter older
than its bound is trimmed."""

from __future__ import annotations

import time

import pytest

from shared import keys
from shared.redisio import add_dead_letter
from tests.conftest import shared_path
from tests.integration.test_replay_jobs import NO_PIPELINE, procs, published, state  # noqa: F401
from tests.procs import wait_until
from workers.jobs import registry

pytestmark = pytest.mark.integration
RETENTION_S = 4.0
HOUSEKEEPING = dict(NO_PIPELINE, ACTIONSTREAM_HOUSEKEEPING_INTERVAL_S="0.5",
                    ACTIONSTREAM_REPLAY_RETENTION_S=str(RETENTION_S), ACTIONSTREAM_DEADLETTER_MAX_AGE_S="2")


def _keys_of(r, camera: str) -> set[bytes]:
    return {k for k in r.scan_iter(count=1000) if keys.hash_tag(k) == camera}


def test_a_finished_replay_is_purged_after_its_retention_by_one_worker(r, procs):  # noqa: F811
    pipe = r.pipeline(transaction=False)
    add_dead_letter(pipe, "pose", keys.frames_stream("cam-1"), "1-0", {"x": "1"}, "undecodable", 1000)
    pipe.execute()
    for name in ("jobs-1", "jobs-2"):
        procs.start(name, "jobs-worker", "--concurrency", "1", env=HOUSEKEEPING)
    video = str(shared_path("data", "urfd", "fall-03-cam0.mp4"))
    done = procs.submit("--source", video, "--camera", "clip", "--speed", "1")
    running = procs.submit("--source", video, "--camera", "clip", "--speed", "0.3")
    assert wait_until(lambda: published(r, done).published >= 10 and published(r, running).published >= 1,
                      60), procs.log("jobs-1") + procs.log("jobs-2")
    assert procs.cli("replay", "cancel", done)[0] == 0
    assert wait_until(lambda: state(r, done) == "CANCELLED", 10)
    ended = registry.state_of(r, done)["updated"]
    camera = registry.spec_of(r, done).replay_camera
    result = f"celery-task-meta-{done}".encode()
    assert wait_until(lambda: r.exists(result), 10)
    # the dead letter is past its 2 s bound from here on: the next sweep (every 0.5 s) trims it
    trimmed = wait_until(lambda: r.xlen(keys.DEADLETTER_STREAM) == 0, 10)
    assert trimmed, "a dead letter older than its bound was kept"

    time.sleep(max(0.0, ended + RETENTION_S - 1.5 - time.time()))  # within its retention: kept
    assert r.hexists(keys.JOBS_KEY, done) and keys.frames_stream(camera).encode() in _keys_of(r, camera)
    assert wait_until(lambda: not r.hexists(keys.JOBS_KEY, done), 30), procs.log("jobs-1") + \
        procs.log("jobs-2")
    assert time.time() >= ended + RETENTION_S
    assert wait_until(lambda: not r.hexists(keys.JOB_STATES_KEY, done), 5)
    assert _keys_of(r, camera) == set() and not r.exists(result)
    logs = "".join((procs.tmp / f"{name}.log").read_text() for name in ("jobs-1", "jobs-2"))
    assert logs.count(f"housekeeping: replay {done} purged") == 1, logs

    assert state(r, running) in ("RUNNING", "DRAINING")  # not finished: never purged
    assert r.hexists(keys.JOBS_KEY, running) and r.xlen(keys.frames_stream(registry.spec_of(r, running)
                                                                            .replay_camera)) > 0
