"""The pose worker hands its exact tracker state over with its acks: a camera taken over after
any batch is tracked as an undisturbed run would track it (DESIGN invariant 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from producer.producer import Producer
from shared import keys
from shared.modelpaths import resolve_pose_model
from shared.schemas import Skeletons
from shared.settings import load_settings, make_camera
from tests.conftest import shared_path

pytestmark = pytest.mark.integration
CROP = (320, 0, 320, 240)  # the RGB half of a UR Fall frame
FRAMES = 60


def _settings(url):
    return load_settings(redis_url=url, shared_dir=shared_path(), mode="replay", replay_max_lag=10_000,
                         batch_per_camera=4)


@pytest.fixture(scope="module")
def pose_model():
    from workers.pose.adapters import load_pose_model

    settings = load_settings(shared_dir=shared_path())
    return load_pose_model("movenet", resolve_pose_model("movenet", settings), threads=2)


def _publish(url, camera):
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))  # frames 40-100: the fall, lying
    Producer(_settings(url), make_camera(id=camera, source=video, crop=CROP)).run(max_frames=FRAMES)


def _run(url, model, camera, max_items=None):
    from workers.pose.worker import PoseWorker

    worker = PoseWorker(_settings(url), model, "movenet", cameras=[camera])
    if max_items is None:
        worker.run(exit_on_eos=True)
    else:
        worker.run(max_items=max_items)
    return worker


def _tracked(r, camera):
    out = []
    for _, fields in r.xrange(keys.skeletons_stream(camera)):
        from shared import codec

        msg = codec.decode_skeletons(fields)
        if isinstance(msg, Skeletons):
            out.append((msg.seq, [(p.track_id, p.keypoints.tobytes(), p.box.tobytes()) for p in msg.people]))
    return out


@pytest.mark.parametrize("split", [8, 36])
def test_a_takeover_tracks_as_an_undisturbed_run(r, redis_url, pose_model, split):
    _publish(redis_url, "cam-ref")
    _run(redis_url, pose_model, "cam-ref")
    _publish(redis_url, "cam-split")
    first = _run(redis_url, pose_model, "cam-split", max_items=split)
    assert 0 < first.metrics["entries"] < FRAMES
    state = json.loads(r.get(keys.tracker_state_key("cam-split")))
    assert state["tracker"]["frames"] == state["seq"] + 1 == first.metrics["entries"]  # with the acks
    _run(redis_url, pose_model, "cam-split")
    ref, split_run = _tracked(r, "cam-ref"), _tracked(r, "cam-split")
    assert [seq for seq, _ in split_run] == list(range(FRAMES))
    assert split_run == ref
    assert any(people for _, people in ref[30:])  # the person is tracked through the fall
    assert r.get(keys.tracker_state_key("cam-split")) == r.get(keys.tracker_state_key("cam-ref"))


def test_an_unreadable_state_falls_back_to_the_last_skeletons(r, redis_url, pose_model):
    _publish(redis_url, "cam-bad")
    _run(redis_url, pose_model, "cam-bad", max_items=20)
    r.set(keys.tracker_state_key("cam-bad"), "{not json")
    _run(redis_url, pose_model, "cam-bad")
    tracked = _tracked(r, "cam-bad")
    assert [seq for seq, _ in tracked] == list(range(FRAMES))
    ids = {i for _, people in tracked for i, _, _ in people}
    assert ids and min(ids) == 1
    assert np.all([i > 0 for i in ids])
    assert json.loads(r.get(keys.tracker_state_key("cam-bad")))["tracker"]["version"] == 1  # rewritten


def test_a_state_left_from_removed_streams_is_not_resumed(r, redis_url, pose_model):
    """`up` starts its cameras afresh by removing their streams: the tracker state of the
    previous run must not be resumed then (its tracks would haunt the new run's first frames)."""
    _publish(redis_url, "cam-ref")
    _run(redis_url, pose_model, "cam-ref")
    _publish(redis_url, "cam-again")
    _run(redis_url, pose_model, "cam-again")
    first_ids = {i for _, people in _tracked(r, "cam-again") for i, _, _ in people}
    r.delete(keys.frames_stream("cam-again"), keys.skeletons_stream("cam-again"))
    r.hdel(keys.done_key(keys.POSE_GROUP), "cam-again")
    _publish(redis_url, "cam-again")
    _run(redis_url, pose_model, "cam-again")
    again = _tracked(r, "cam-again")
    assert json.loads(r.get(keys.tracker_state_key("cam-again")))["tracker"]["frames"] == len(again)
    ref = _tracked(r, "cam-ref")
    assert [[p[1:] for p in people] for _, people in again] == [[p[1:] for p in people] for _, people in ref]
    assert min(i for _, people in again for i, _, _ in people) > max(first_ids)  # ids never reused
