"""The stages as real workers on a real Redis server, with real models and a real clip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from producer.producer import Producer
from shared import codec, keys
from shared.modelpaths import resolve_pose_model
from shared.redisio import ensure_group
from shared.schemas import EndOfStream, Frame, Skeletons
from shared.settings import load_settings, make_camera
from shared.skeleton import Person, box_from_keypoints
from tests.conftest import shared_path

pytestmark = pytest.mark.integration
CROP = (320, 0, 320, 240)


def _settings(url, **kw):
    kw.setdefault("mode", "replay")
    kw.setdefault("replay_max_lag", 10_000)
    return load_settings(redis_url=url, shared_dir=shared_path(), **kw)


def _publish(url, camera, clip, frames):
    video = str(shared_path("data", "urfd", clip))
    Producer(_settings(url), make_camera(id=camera, source=video, crop=CROP)).run(max_frames=frames)


@pytest.fixture(scope="module")
def pose_model():
    from workers.pose.adapters import load_pose_model

    settings = load_settings(shared_dir=shared_path())
    return load_pose_model("movenet", resolve_pose_model("movenet", settings), threads=2)


def _skeletons(r, camera):
    return [codec.decode_skeletons(f) for _, f in r.xrange(keys.skeletons_stream(camera))]


def test_pose_worker_batches_two_cameras_in_one_model_call(r, redis_url, pose_model):
    from workers.pose.worker import PoseWorker

    _publish(redis_url, "cam-a", "fall-01-cam0.mp4", 24)
    _publish(redis_url, "cam-b", "fall-02-cam0.mp4", 24)
    worker = PoseWorker(_settings(redis_url, batch_per_camera=4), pose_model, "movenet",
                        cameras=["cam-a", "cam-b"])
    assert worker.run(exit_on_eos=True) == 0
    m = worker.metrics
    assert m["frames"] == 48
    assert m["batches_multi_camera"] >= 1 and m["max_cameras_per_batch"] == 2
    assert m["model_calls"] < m["frames"]  # frames were batched
    for cam in ("cam-a", "cam-b"):
        msgs = _skeletons(r, cam)
        assert [s.seq for s in msgs if isinstance(s, Skeletons)] == list(range(24))
        assert isinstance(msgs[-1], EndOfStream)
    assert r.xlen(keys.frames_stream("cam-a")) <= 2  # acked frames were trimmed
    assert r.xpending(keys.frames_stream("cam-a"), keys.POSE_GROUP)["pending"] == 0


def test_bad_frames_are_dead_lettered_and_the_rest_processed(r, redis_url, pose_model):
    from workers.pose.worker import PoseWorker

    stream = keys.frames_stream("cam-x")
    ensure_group(r, stream, keys.POSE_GROUP)
    corrupt = codec.encode_frame(Frame("cam-x", 100, 1.0, 320, 240, b"\xff\xd8\xff\xe0garbage"))
    r.xadd(stream, corrupt)  # a corrupt JPEG
    r.xadd(stream, {"v": "7", "kind": "frame", "camera": "cam-x"})  # unknown schema version
    r.xadd(stream, {"garbage": "yes"})  # truncated message
    _publish(redis_url, "cam-x", "fall-01-cam0.mp4", 6)  # then good frames and the end
    worker = PoseWorker(_settings(redis_url), pose_model, "movenet", cameras=["cam-x"])
    worker.run(exit_on_eos=True)
    skels = [s for s in _skeletons(r, "cam-x") if isinstance(s, Skeletons)]
    assert [s.seq for s in skels] == list(range(6))
    reasons = [codec.decode_dead_letter(f).reason for _, f in r.xrange(keys.DEADLETTER_STREAM)]
    assert len(reasons) == 3
    assert any("cannot be decoded" in x for x in reasons)
    assert any("unknown schema version 7" in x for x in reasons)
    assert any("missing" in x for x in reasons)


def test_action_worker_classifies_windows_and_never_doubles_an_event(r, redis_url, seeded_action_model):
    """Events come out with the schema; a redelivery of every skeleton raises none twice."""
    from workers.action.classifier import ActionClassifier
    from workers.action.rules import Rule, Rules
    from workers.action.worker import ActionWorker

    sk_path = shared_path("data", "kinetics", "skeleton_json", "--33Lscn6sk.json")
    frames = json.loads(sk_path.read_text())["data"]
    stream = keys.skeletons_stream("cam-k")
    for i, frame in enumerate(frames[:90]):
        people = []
        for tid, sk in enumerate(frame["skeleton"][:2], start=1):
            xy = np.asarray(sk["pose"], np.float32).reshape(18, 2) * (340, 256)
            kp = np.concatenate([xy, np.asarray(sk["score"], np.float32)[:, None]], axis=1)
            people.append(Person(kp, box_from_keypoints(kp), 1.0, tid))
        skel = Skeletons("cam-k", i, 100 + i / 30, 340, 256, tuple(people), "t")
        r.xadd(stream, codec.encode_skeletons(skel))
    bad = {"v": "1", "kind": "skeletons", "camera": "cam-k", "seq": "5", "ts": "0", "w": "1", "h": "1",
           "model": "m", "people": json.dumps([{"kp": [math.nan] * 54, "box": [0, 0, 1, 1], "score": 1}])}
    r.xadd(stream, bad)
    r.xadd(stream, codec.encode_skeletons(EndOfStream("cam-k", 90)))
    r.hset(keys.CAMERAS_KEY, "cam-k", "{}")

    def run_once():
        classifier = ActionClassifier(seeded_action_model, threads=2)
        rules = Rules([Rule(label, 0.0, 1, 0.0) for label in classifier.card.labels])
        worker = ActionWorker(_settings(redis_url, stride=15, min_frames=16), classifier, rules,
                              cameras=["cam-k"])
        worker.run(burst=True)
        return worker

    worker = run_once()
    events = [codec.decode_event(f[b"event"]) for _, f in r.xrange(keys.EVENTS_STREAM)]
    assert worker.metrics["windows"] >= 4 and worker.metrics["classify_calls"] <= worker.metrics["windows"]
    assert events, "every label is alerted at threshold 0, so windows must raise events"
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    for e in events:
        assert e.camera == "cam-k" and e.track_id in (1, 2)
        assert 0 <= e.frame_start <= e.frame_end < 90 and e.ts_start <= e.ts_end
        assert e.label in ("upright", "falling", "lying") and 0 <= e.score <= 1
    assert "NaN" in codec.decode_dead_letter(r.xrange(keys.DEADLETTER_STREAM)[-1][1]).reason
    # redeliver everything: a fresh group and a fresh worker see all skeletons again
    r.xgroup_destroy(stream, keys.ACTION_GROUP)
    r.hdel(keys.done_key(keys.ACTION_GROUP), "cam-k")
    again = run_once()
    assert again.metrics["duplicates"] == len(events)
    assert r.xlen(keys.EVENTS_STREAM) == len(events)
