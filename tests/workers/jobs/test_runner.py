"""The replay job's I/O loop on a real Redis with a real clip: a stopped job resumes after
its last published frame (each frame once), the lease keeps a second copy out and fences a
copy that lost it, a cancel ends the stream; live cameras keep precedence in the workers."""

from __future__ import annotations

import pytest

from shared import codec, keys
from shared.schemas import EndOfStream, Frame
from shared.settings import load_settings
from tests.conftest import shared_path
from workers.jobs import registry
from workers.jobs.replay import JobSpec
from workers.jobs.runner import Busy, JobRunner, Stopping

CLIP_FRAMES = 55  # fall-16


def _spec(job="j1"):
    return JobSpec(job=job, camera="clip", source="video", target="pose",
                   path=str(shared_path("data", "urfd", "fall-16-cam0.mp4")), t0=1000.0, created=1.0)


def _runner(r, url, spec, **kw):
    settings = load_settings(redis_url=url, replay_max_lag=100000, lease_ttl_s=5)
    return JobRunner(r, settings, spec, **kw)


def _frames(r, spec):
    return [codec.decode_frame(f) for _, f in r.xrange(keys.frames_stream(spec.replay_camera))]


def _published(r, spec):
    return r.xlen(keys.frames_stream(spec.replay_camera))


def test_a_stopped_job_resumes_after_its_last_published_frame(r, redis_url):
    spec = _spec()
    registry.register(r, spec)
    reports = []
    first = _runner(r, redis_url, spec, report=reports.append, stopping=lambda: _published(r, spec) >= 20)
    with pytest.raises(Stopping):
        first.run()
    assert _published(r, spec) == 20 and first.checkpoint().seq == 19
    assert registry.state_of(r, spec.job)["state"] == "RUNNING"
    r.hset(keys.done_key(keys.ACTION_GROUP), spec.replay_camera, CLIP_FRAMES)  # the stages' part
    summary = _runner(r, redis_url, spec, report=reports.append).run()
    assert summary["state"] == "DONE" and summary["published"] == CLIP_FRAMES
    assert not r.hexists(keys.CAMERAS_KEY, spec.replay_camera)  # done: unregistered
    msgs = _frames(r, spec)
    assert [m.seq for m in msgs if isinstance(m, Frame)] == list(range(CLIP_FRAMES))
    assert msgs[-1] == EndOfStream(spec.replay_camera, CLIP_FRAMES)
    assert all(m.ts == pytest.approx(1000.0 + m.seq / 30) for m in msgs if isinstance(m, Frame))
    assert reports[-1]["total"] == CLIP_FRAMES and reports[-1]["done"] == CLIP_FRAMES
    # a third copy (a late redelivery) finds the job done and publishes nothing
    assert _runner(r, redis_url, spec).run()["state"] == "DONE"
    assert _published(r, spec) == CLIP_FRAMES + 1


def test_the_lease_keeps_a_second_copy_out_and_fences_one_that_lost_it(r, redis_url):
    spec = _spec()
    registry.register(r, spec)
    holder = _runner(r, redis_url, spec)
    assert holder.leases.try_acquire(spec.replay_camera)
    with pytest.raises(Busy):
        _runner(r, redis_url, spec).run()
    holder.leases.release(spec.replay_camera)

    lease = keys.lease_key(keys.JOB_STAGE, spec.replay_camera)

    def steal():  # another copy takes the lease over after 10 frames
        if _published(r, spec) >= 10:
            r.set(lease, "other|99")
        return False

    _runner(r, redis_url, spec, stopping=steal).run()
    assert _published(r, spec) == 10  # nothing written without the lease
    assert registry.state_of(r, spec.job)["state"] == "RUNNING"


def test_a_cancelled_job_ends_its_stream_and_stops(r, redis_url):
    spec = _spec()
    registry.register(r, spec)

    def cancel_at_5():
        if _published(r, spec) >= 5:
            registry.request_cancel(r, spec)
        return False

    summary = _runner(r, redis_url, spec, stopping=cancel_at_5).run()
    assert summary["state"] == "CANCELLED" and summary["published"] == 5
    assert isinstance(_frames(r, spec)[-1], EndOfStream)
    queued = _spec("j2")
    registry.register(r, queued)
    assert registry.request_cancel(r, queued) == "CANCELLED"  # before it started: at once
    assert _runner(r, redis_url, queued).run()["state"] == "CANCELLED"
    assert _published(r, queued) == 0


def test_live_cameras_keep_precedence_over_replays(r, redis_url):
    """A live camera's entries are read first; a replay camera's only when no live entry is
    waiting, one per read while live cameras are served, whole batches on a worker without
    live cameras."""
    from tests.shared.echo_stage import EchoWorker, publish, register, settings

    register(r, ["live", "live~j1"])
    publish(r, "live", 10)
    publish(r, "live~j1", 20)

    def reads(cameras, n):
        w = EchoWorker(settings(redis_url, batch_per_camera=8, max_batch=64, mode="live"), "w", cameras)
        w._connect()
        w.refresh_leases()
        out = []
        while len(out) < n and (got := w.read()):
            out.append((sum(e.camera == "live" for e in got), sum(e.camera == "live~j1" for e in got)))
            w.process(got)
        w._shutdown()
        return out

    assert reads(None, 4) == [(8, 0), (2, 0), (0, 1), (0, 1)]
    assert reads(["live~j1"], 4) == [(0, 8), (0, 8), (0, 2)]  # the 18 left, in whole batches


def test_a_folder_of_videos_replays_in_name_order_with_seqs_counting_on(tmp_path):
    import cv2
    import numpy as np

    from workers.jobs import replay_sources as sources

    for name, n, shade in (("b.avi", 4, 200), ("a.avi", 3, 50)):
        writer = cv2.VideoWriter(str(tmp_path / name), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
        for _ in range(n):
            writer.write(np.full((48, 64, 3), shade, np.uint8))
        writer.release()
    (tmp_path / "notes.txt").write_text("not a video")
    spec = JobSpec(job="j9", camera="folder", source="video", target="pose", path=str(tmp_path), t0=50.0)
    assert [p.name for p in sources.video_files(spec.path)] == ["a.avi", "b.avi"]
    assert sources.check_videos(spec) == 7
    items = list(sources.video_items(spec, after_seq=None))
    frames = [codec.decode_frame(i.fields) for i in items]
    assert [f.seq for f in frames] == list(range(7)) and {f.camera for f in frames} == {"folder~j9"}
    assert [round(f.ts, 3) for f in frames] == [round(50.0 + k / 10, 3) for k in range(7)]
    shades = [int(codec.decode_jpeg(f).mean()) for f in frames]
    assert all(abs(s - 50) < 5 for s in shades[:3]) and all(abs(s - 200) < 5 for s in shades[3:])
    assert [i.seq for i in sources.video_items(spec, after_seq=4)] == [5, 6]  # a resume


def test_a_worker_releases_a_camera_that_is_no_longer_registered(r, redis_url):
    """A finished replay unregisters its camera: the workers let it go, so that it neither
    counts against their fair share nor keeps them from taking the next replay."""
    from tests.shared.echo_stage import EchoWorker, register, settings

    register(r, ["live", "live~j1"])
    w = EchoWorker(settings(redis_url, max_cameras=2), "w")
    w._connect()
    w.refresh_leases()
    assert w.owned == {"live", "live~j1"}
    r.hdel(keys.CAMERAS_KEY, "live~j1")
    register(r, ["live~j2"])
    w.refresh_leases()
    assert w.owned == {"live", "live~j2"}
    assert not r.exists(keys.lease_key(w.stage, "live~j1"))
    w._shutdown()
