"""Exact takeover with real workers: two ActionWorkers on a real Redis with the shipped fall
model and real skeletons of a URFD fall. Worker A processes part of the stream and dies
(its lease gone, a batch read but never acked); worker B takes the camera over. The events
of A and B together are exactly those of an undisturbed worker, and none is written twice."""

from __future__ import annotations

import json

import pytest

from shared import codec, keys
from shared.schemas import EndOfStream
from shared.settings import load_settings
from tests.conftest import shared_path
from tests.workers.action.realclips import shipped_classifier, urfd_skeletons
from workers.action.worker import ActionWorker, rules_from_settings

pytestmark = pytest.mark.integration
CAM = "cam"


def _settings(url, batch):
    return load_settings(redis_url=url, shared_dir=shared_path(), mode="replay", lease_ttl_s=5.0,
                         stride=7, min_frames=20, batch_per_camera=batch, block_ms=20,
                         alert_labels=["falling", "fallen"], alert_threshold=0.004,
                         alert_consecutive=2, alert_cooldown_s=0.6, fallen_after_s=0.5)


@pytest.fixture(scope="module")
def classifier():
    return shipped_classifier()


def _load(r):
    frames, _ = urfd_skeletons("fall-01", CAM)
    r.flushdb()
    for msg in (*frames, EndOfStream(CAM, len(frames))):
        r.xadd(keys.skeletons_stream(CAM), codec.encode_skeletons(msg))
    r.hset(keys.CAMERAS_KEY, CAM, "{}")
    return len(frames) + 1


def _worker(url, classifier, name, batch):
    settings = _settings(url, batch)
    return ActionWorker(settings, classifier, rules_from_settings(settings, classifier.card.labels),
                        cameras=[CAM], worker_id=name)


def _events(r):
    return [json.loads(f[b"event"]) for _, f in r.xrange(keys.EVENTS_STREAM)]


@pytest.fixture(scope="module")
def undisturbed(redis_url, classifier):
    import redis

    r = redis.Redis.from_url(redis_url)
    _load(r)
    worker = _worker(redis_url, classifier, "action-u", batch=8)
    worker.run(exit_on_eos=True)
    events = _events(r)
    assert len(events) >= 5 and {"falling", "fallen"} <= {e["label"] for e in events}
    return [(e["id"], e["label"], e["frame_end"]) for e in events]


@pytest.mark.parametrize("cut", [12, 45, 77, 104, 123, 150])
def test_a_crashed_workers_camera_continues_exactly(r, redis_url, classifier, undisturbed, cut):
    _load(r)
    a = _worker(redis_url, classifier, "action-a", batch=5)
    a.run(max_items=cut)
    # A dies: a batch read and never acked, its lease gone (B need not wait for the TTL)
    r.xreadgroup(keys.ACTION_GROUP, "action-a", {keys.skeletons_stream(CAM): ">"}, count=4)
    assert r.xpending(keys.skeletons_stream(CAM), keys.ACTION_GROUP)["pending"] > 0 or cut >= 150
    r.delete(keys.lease_key(keys.ACTION_GROUP, CAM))
    b = _worker(redis_url, classifier, "action-b", batch=3)
    b.run(exit_on_eos=True)
    got = [(e["id"], e["label"], e["frame_end"]) for e in _events(r)]
    assert sorted(got) == sorted(undisturbed), f"takeover after {a.metrics['entries']} entries"
    assert b.metrics["duplicates"] == 0
    assert r.xpending(keys.skeletons_stream(CAM), keys.ACTION_GROUP)["pending"] == 0


def test_the_state_is_stored_with_the_acks(r, redis_url, classifier):
    _load(r)
    a = _worker(redis_url, classifier, "action-a", batch=5)
    a.run(max_items=30)
    state = json.loads(r.get(keys.action_state_key(CAM)))
    windows = state["windows"]
    acked = r.xrange(keys.skeletons_stream(CAM), count=a.metrics["entries"])
    assert windows["last_seq"] == codec.decode_skeletons(acked[-1][1]).seq
    assert windows["tracks"] and set(state) >= {"rules", "still_down"}
