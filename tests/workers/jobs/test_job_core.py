"""The pure parts of replay jobs: replay camera ids, the job spec, pacing, progress, the
checkpoint; replay events carrying their job; per-camera rule overrides."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared import codec, keys
from shared.schemas import Event
from workers.action.rules import Rule, Rules
from workers.action.window import WindowRef
from workers.jobs.replay import Checkpoint, JobSpec, Pacer, Progress, ReplayError


@pytest.mark.parametrize("camera,error", [
    ("cam-1", None),
    ("cam-1~a1b2", None),
    ("cam-1~a1b2~c3", "invalid"),  # exactly one '~'
    ("~a1b2", "invalid"),
    ("cam-1~", "invalid"),
    ("cam 1~job", "invalid"),
    ("c" * 64 + "~" + "j" * 64, None),
    ("c" * 65 + "~j", "invalid"),
])
def test_replay_camera_ids(camera, error):
    if error:
        with pytest.raises(ValueError, match=error):
            keys.check_camera_id(camera)
        return
    assert keys.check_camera_id(camera) == camera
    base, job = keys.split_replay(camera)
    assert keys.is_replay(camera) == (job is not None)
    if job is not None:
        assert keys.replay_camera(base, job) == camera
        # the checkpoint, lease and input streams of a replay share one hash tag (one slot)
        tags = {keys.hash_tag(k) for k in (keys.job_checkpoint_key(camera), keys.job_cancel_key(camera),
                                           keys.lease_key(keys.JOB_STAGE, camera),
                                           keys.frames_stream(camera), keys.skeletons_stream(camera))}
        assert tags == {camera}


def test_replay_events_have_their_own_stream_on_the_events_slot():
    assert keys.REPLAY_EVENTS_STREAM != keys.EVENTS_STREAM
    assert keys.hash_tag(keys.REPLAY_EVENTS_STREAM) == keys.hash_tag(keys.event_guard_key("x")) == "events"
    with pytest.raises(ValueError):
        keys.replay_camera("cam~x", "job")


def _event(camera):
    return Event(camera=camera, track_id=3, label="falling", label_index=1, score=0.9, frame_start=60,
                 frame_end=107, ts_start=2.0, ts_end=3.6, model="fall", emitted_at=10.0)


def test_replay_events_carry_their_job_and_old_events_still_decode():
    replay = _event("cam-1~job7")
    assert replay.job == "job7"
    assert codec.decode_event(codec.encode_event(replay)) == replay
    live = _event("cam-1")
    doc = codec.event_to_dict(live)
    assert "job" not in doc and live.job == ""  # a live event's JSON is as it always was
    assert codec.decode_event(json.dumps(doc)) == live
    assert codec.event_to_dict(replay)["job"] == "job7"
    for bad in (7, "job8"):
        with pytest.raises(codec.DecodeError, match="job"):
            codec.decode_event(json.dumps(dict(codec.event_to_dict(replay), job=bad)))


def _spec(**kw):
    base = dict(job="j1", camera="cam-1", source="archive", target="pose")
    return JobSpec(**dict(base, **kw))


@pytest.mark.parametrize("kw,error", [
    ({}, None),
    ({"target": "action", "start_ts": 1.0, "end_ts": 2.0, "threshold": 0.9, "consecutive": 1}, None),
    ({"source": "video", "path": "/x.mp4", "speed": 2.0}, None),
    ({"start_ts": 5.0, "end_ts": 3.0}, "not before"),
    ({"speed": -1.0}, "speed"),
    ({"speed": float("nan")}, "speed"),
    ({"threshold": 1.5}, "threshold"),
    ({"consecutive": 0}, "consecutive"),
    ({"source": "video", "target": "action"}, "pose stage"),
    ({"source": "tape"}, "unknown"),
    ({"target": "ocr"}, "unknown"),
    ({"camera": "cam~1"}, "neither"),
    ({"job": "bad job"}, "invalid"),
])
def test_job_spec(kw, error):
    if error:
        with pytest.raises(ReplayError, match=error):
            _spec(**kw)
        return
    spec = _spec(**kw)
    assert JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.replay_camera == f"{spec.camera}~{spec.job}"
    assert spec.kind == ("frames" if spec.target == "pose" else "skeletons")


def test_a_spec_with_unknown_fields_is_refused():
    with pytest.raises(ReplayError, match="unknown fields"):
        JobSpec.from_dict(dict(_spec().to_dict(), pickle="x"))


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.mark.parametrize("speed,ts,after,expected", [
    (1.0, [10.0, 10.5, 11.0], [0.0, 0.0, 0.0], [0.0, 0.5, 1.0]),   # original speed
    (2.0, [10.0, 11.0, 12.0], [0.0, 0.0, 0.0], [0.0, 0.5, 1.0]),   # twice as fast
    (1.0, [10.0, 11.0, 12.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]),   # behind: never waits
    (0.0, [10.0, 20.0], [0.0, 0.0], [0.0, 0.0]),                   # as fast as it goes
])
def test_pacer(speed, ts, after, expected):
    clock = Clock()
    pacer = Pacer(speed, clock)
    got = []
    for t, late in zip(ts, after):
        clock.t += late
        got.append(round(pacer.delay(t), 6))
    assert got == expected


def test_progress_eta_from_the_rate_of_this_run():
    clock = Clock(0.0)
    p = Progress(total=100, done=40, clock=clock)  # resumed at 40
    assert p.meta("publishing") == {"done": 40, "total": 100, "eta_s": None, "rate": None,
                                    "phase": "publishing"}
    clock.t = 2.0
    p.advance(20)  # 10 per second since this run started
    assert p.eta_s() == 4.0 and p.rate() == 10.0  # not 30: the 40 done before it are not this run's
    clock.t = 5.0
    assert p.rate() == 10.0  # the rate it published at, not lowered while it waits
    p.advance(40)
    assert p.eta_s() == 0.0
    assert Progress(None, 0, clock).eta_s() is None


@pytest.mark.parametrize("raw,expected", [
    ({}, Checkpoint(None, 0, False)),
    ({b"seq": b"41", b"published": b"42"}, Checkpoint(41, 42, False)),
    ({b"seq": b"41", b"published": b"30", b"eos": b"1"}, Checkpoint(41, 30, True)),
])
def test_checkpoint(raw, expected):
    ck = Checkpoint.from_hash(raw)
    assert ck == expected
    assert ck.end_seq == (0 if expected.seq is None else expected.seq + 1)


def _ref(camera, end, track=1):
    return WindowRef(camera=camera, track_id=track, frame_start=end - 47, frame_end=end, ts_start=0.0,
                     ts_end=end / 30, frames=48, seen=48, data=np.zeros((3, 48, 18, 2), np.float32))


def test_rule_overrides_apply_to_their_camera_only():
    rules = Rules([Rule("falling", 0.5, 2, 0.0), Rule("fallen", 0.0, 1, 0.0)])
    rules.override("cam~j", threshold=0.8, consecutive=1)
    labels = ["not-falling", "falling"]
    p = np.array([0.3, 0.7])
    live = [rules.decide(_ref("cam", e), p, labels, "m") for e in (47, 62)]
    replay = [rules.decide(_ref("cam~j", e), p, labels, "m") for e in (47, 62)]
    assert [len(x) for x in live] == [0, 1]  # 0.7 >= 0.5 twice in a row
    assert [len(x) for x in replay] == [0, 0]  # 0.7 < 0.8
    assert len(rules.decide(_ref("cam~j", 77), np.array([0.1, 0.9]), labels, "m")) == 1  # one is enough
    assert rules.rule_for("fallen").threshold == 0.0  # derived labels keep their rule
    rules.clear_override("cam~j")
    assert rules.decide(_ref("cam~j", 92, track=2), np.array([0.1, 0.9]), labels, "m") == []  # 2 in a row


def test_the_jobs_app_is_json_only_with_late_acks_and_the_visibility_timeout_setting():
    from shared.settings import Settings
    from workers.jobs.celery_app import QUEUE, jobs_config

    config = jobs_config(Settings(redis_url="redis://h:1/0", jobs_visibility_timeout_s=4))
    assert config["accept_content"] == ["json"] and config["result_accept_content"] == ["json"]
    assert config["task_serializer"] == config["result_serializer"] == "json"
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["task_default_queue"] == QUEUE and config["result_backend"] == "redis://h:1/0"
    assert config["broker_transport_options"]["visibility_timeout"] == 4
    assert config["broker_transport_options"]["unacked_restore_interval"] == 1
