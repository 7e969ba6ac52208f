"""The producer's run on every frame, and the times a file read at full speed is stamped with."""

from __future__ import annotations

import shutil
import time

from producer.producer import Producer
from shared import codec, keys
from shared.schemas import Frame
from shared.settings import load_settings, make_camera
from tests.conftest import shared_path

CROP = (320, 0, 320, 240)


def _frames(r, camera):
    msgs = [codec.decode_frame(f) for _, f in r.xrange(keys.frames_stream(camera))]
    return [m for m in msgs if isinstance(m, Frame)]


def _fresh_run(r, settings, camera, video, frames=6, **fields):
    """One producer run of ``video`` as ``up`` starts it: the camera's keys removed first."""
    r.delete(keys.producer_key(camera), keys.frames_stream(camera))
    producer = Producer(settings, make_camera(id=camera, source=str(video), crop=CROP, **fields))
    assert producer.run(max_frames=frames) == 0
    return producer, _frames(r, camera)


def test_every_frame_carries_the_run_of_its_source(r, redis_url, tmp_path):
    settings = load_settings(redis_url=redis_url, mode="replay", replay_max_lag=1000)
    fall01, fall05 = (shared_path("data", "urfd", f"fall-{n}-cam0.mp4") for n in ("01", "05"))
    a, frames_a = _fresh_run(r, settings, "cam-1", fall01)
    assert a.epoch == 1 and a.run_id.startswith("1.") and {f.run for f in frames_a} == {a.run_id}
    again, _ = _fresh_run(r, settings, "cam-1", fall01)
    assert again.run_id == a.run_id  # the same file on a camera started afresh: the same run
    b, frames_b = _fresh_run(r, settings, "cam-1", fall05)
    assert b.epoch == 1 and {f.run for f in frames_b} == {b.run_id} != {a.run_id}  # another source
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(fall01, copy)
    assert _fresh_run(r, settings, "cam-1", copy)[0].run_id != a.run_id  # another file
    assert _fresh_run(r, settings, "cam-1", fall01, width=160)[0].run_id != a.run_id  # other frames
    second = Producer(settings, make_camera(id="cam-1", source=str(fall01), crop=CROP))
    assert second.run(max_frames=2) == 0  # a restart continues the camera: a new epoch
    assert second.epoch == 2 and second.run_id.startswith("2.") and second.run_id != a.run_id


def test_a_file_read_at_full_speed_is_stamped_before_the_start(r, redis_url):
    """Faster than real time, a file stamped from the start would run ahead of the clock
    (events emitted before their window ended): its last frame is stamped at the start."""
    settings = load_settings(redis_url=redis_url, mode="replay", replay_max_lag=1000)
    video = shared_path("data", "urfd", "fall-01-cam0.mp4")
    started = time.time()
    _, frames = _fresh_run(r, settings, "cam-t", video, frames=20)
    finished = time.time()
    duration = 160 / 30  # fall-01: 160 frames at 30 fps
    assert started - duration - 0.01 <= frames[0].ts <= finished - duration
    assert all(abs((b.ts - a.ts) - 1 / 30) < 1e-3 for a, b in zip(frames, frames[1:]))
    assert frames[-1].ts <= started
    paced = load_settings(redis_url=redis_url, mode="live")  # published at its frames' times
    started = time.time()
    _, frames = _fresh_run(r, paced, "cam-t", video, frames=4)
    assert started <= frames[0].ts <= started + 0.5 and frames[-1].ts <= time.time()
