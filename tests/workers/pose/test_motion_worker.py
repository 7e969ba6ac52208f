"""The pose worker with motion gating, on a real clip with still stretches (UP-Fall
"laying": the person walks in, lies down and stays down) through a real Redis and MoveNet.

The model's calls are counted where the worker hands it frames (a wrapper around the real
model), not by the worker's own counters.
"""

from __future__ import annotations

import json

import pytest

from shared import codec, keys
from shared.schemas import Skeletons
from shared.settings import load_settings
from tests.conftest import shared_path
from tests.workers.pose.test_worker_decode import _jpegs, _publish

CLIP, FRAMES, FPS = "A11-S01-T1-C1.mp4", 270, 18  # 15 s


class CountingModel:
    """The real model; counts the frames it is given."""

    def __init__(self, model) -> None:
        self.model, self.frames = model, 0
        self.prepare = model.prepare
        self.track_thresholds = getattr(model, "track_thresholds", (0.0, 0.0))

    def infer_prepared(self, images):
        def counted():
            for image in images:
                self.frames += 1
                yield image
        return self.model.infer_prepared(counted())


@pytest.fixture(scope="module")
def laying():
    return _jpegs(CLIP, FRAMES)


def _run(r, url, model, camera: str, registration: dict, **settings):
    from workers.pose.worker import PoseWorker

    r.hset(keys.CAMERAS_KEY, camera, json.dumps(registration))
    settings = load_settings(redis_url=url, mode="replay", replay_max_lag=10_000, batch_per_camera=16,
                             shared_dir=shared_path(), **settings)
    counting = CountingModel(model)
    worker = PoseWorker(settings, counting, "movenet", cameras=[camera])
    assert worker.run(burst=True, exit_on_eos=True) == 0
    skeletons = [codec.decode_skeletons(f) for _, f in r.xrange(keys.skeletons_stream(camera))]
    return counting.frames, [s for s in skeletons if isinstance(s, Skeletons)]


def _publish_at(r, camera, jpegs):
    _publish(r, camera, jpegs)  # seq i at i/18 s


def test_gating_runs_the_model_on_fewer_frames_and_keeps_every_time_step(r, redis_url, movenet, laying):
    _publish_at(r, "gated", laying)
    _publish_at(r, "plain", laying)
    calls_plain, plain = _run(r, redis_url, movenet, "plain", {})
    calls_gated, gated = _run(r, redis_url, movenet, "gated", {}, motion_gating=True, motion_keyframe_s=1.0)
    assert calls_plain == FRAMES
    assert [s.seq for s in gated] == [s.seq for s in plain] == list(range(FRAMES))  # a skeleton per frame
    assert calls_gated < 0.85 * FRAMES, calls_gated  # the still stretches skip the model
    # whoever the model saw is still seen: the same tracks, present in as many frames
    ids = lambda run: sorted({p.track_id for s in run for p in s.people})  # noqa: E731
    assert ids(gated) == ids(plain)
    seen = lambda run: sum(bool(s.people) for s in run)  # noqa: E731
    assert abs(seen(gated) - seen(plain)) <= 0.05 * FRAMES


def test_a_repeated_frame_repeats_the_last_people_and_keyframes_keep_coming(r, redis_url, movenet, laying):
    _publish_at(r, "still", laying)
    _, gated = _run(r, redis_url, movenet, "still", {}, motion_gating=True, motion_keyframe_s=1.0)
    repeated = [i for i in range(1, len(gated))
                if gated[i].people and _people(gated[i]) == _people(gated[i - 1])]
    assert repeated, "no frame repeated its predecessor's people"
    fresh = [s.seq for i, s in enumerate(gated) if i == 0 or _people(s) != _people(gated[i - 1])]
    gaps = [(b - a) / FPS for a, b in zip(fresh, fresh[1:])]
    assert max(gaps) <= 1.0 + 1.5 / FPS, max(gaps)  # the model ran at least once a second


def test_a_camera_file_turns_gating_on_for_its_camera_only(r, redis_url, movenet, laying):
    _publish_at(r, "own", laying[:90])
    _publish_at(r, "default", laying[:90])
    own, _ = _run(r, redis_url, movenet, "own", {"motion": {"enabled": True, "keyframe_s": 2.0}})
    default, _ = _run(r, redis_url, movenet, "default", {})
    assert default == 90 and own < 90
    _publish_at(r, "bad", laying[:90])
    bad, _ = _run(r, redis_url, movenet, "bad", {"motion": {"enabled": True, "threshold": 7}})
    assert bad == 90  # a threshold out of range: gating stays as the settings say (off), frames flow


def _people(s: Skeletons):
    return [(p.track_id, p.keypoints.round(4).tolist()) for p in s.people]
