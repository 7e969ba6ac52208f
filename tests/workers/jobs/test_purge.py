"""``actionstream replay purge``: a finished job's replay camera leaves nothing in Redis (on a
plain server and on a Cluster), another job's and a live camera's keys stay untouched; a
job still running is refused; ``--finished --older-than`` picks by the time a job ended;
bad input is one line, exit code 2, nothing removed."""

from __future__ import annotations

import inspect

import pytest

from shared import codec, keys
from shared.leases import Leases
from shared.schemas import Event
from shared.settings import load_settings
from tests.conftest import shared_path
from workers.action.worker import _WRITE_EVENT, EVENT_GUARD_TTL_S
from workers.console.cli import main
from workers.jobs import purge, registry
from workers.jobs.replay import JobSpec, ReplayError
from workers.jobs.runner import JobRunner

CLIP_FRAMES = 55  # fall-16
LIVE = "clip"  # the live camera the replays are named after: its keys must stay


def _spec(job: str) -> JobSpec:
    return JobSpec(job=job, camera=LIVE, source="video", target="pose",
                   path=str(shared_path("data", "urfd", "fall-16-cam0.mp4")), t0=1000.0, created=1.0)


def _run_job(r, url: str, spec: JobSpec, cancel_at: int = 0) -> str:
    """Run ``spec`` through the real runner: cancelled after ``cancel_at`` frames, else to
    DONE (the stages' done marks are set once its end of stream is out). Its final state."""
    registry.register(r, spec)
    stream = keys.frames_stream(spec.replay_camera)

    def stages():
        if cancel_at and r.xlen(stream) >= cancel_at:
            registry.request_cancel(r, spec)
        if r.xlen(stream) > CLIP_FRAMES:  # the end of stream is out: the stages' part
            for stage in keys.DONE_STAGES:
                r.hset(keys.done_key(stage), spec.replay_camera, CLIP_FRAMES)
        return False

    settings = load_settings(redis_url=url, replay_max_lag=100000, lease_ttl_s=5)
    return JobRunner(r, settings, spec, stopping=stages).run()["state"]


def _stage_writes(r, camera: str, live: bool = False) -> None:
    """What the producer, pose and action stages leave of ``camera``, written with the real
    key functions, leases and event script."""
    for stage in (keys.POSE_GROUP, keys.ACTION_GROUP):
        assert Leases(r, stage, f"{stage}-w1", 30).try_acquire(camera)
    r.xadd(keys.skeletons_stream(camera), {"seq": 0})
    r.xadd(keys.scores_stream(camera), {"label": "falling", "score": "0.9"})
    r.xadd(keys.recent_frames_stream(camera), {"jpeg": b"\xff\xd8" + b"x" * 1000})
    r.set(keys.tracker_state_key(camera), "{}")
    r.incr(keys.next_track_key(camera))
    r.set(keys.action_state_key(camera), "{}")
    for stage in keys.DONE_STAGES:
        r.hset(keys.done_key(stage), camera, 3)
    write_event = r.register_script(_WRITE_EVENT)
    for frame_end in (30, 45):
        event = Event(camera, 1, "falling", 1, 0.9, frame_end - 30, frame_end, 1000.0, 1001.0, "m", 1002.0)
        stream = keys.REPLAY_EVENTS_STREAM if keys.is_replay(camera) else keys.EVENTS_STREAM
        write_event(keys=[keys.event_guard_key(event.id), stream],
                    args=[EVENT_GUARD_TTL_S, codec.encode_event(event), "", 1000])
    if live:
        r.hset(keys.producer_key(camera), mapping={"epoch": 1, "seq": 3})
        r.xadd(keys.frames_stream(camera), {"seq": 0})
        r.hset(keys.CAMERAS_KEY, camera, "{}")


def _everything(r) -> set[bytes]:
    return set(r.scan_iter(count=1000))


def _events_of(r, camera: str) -> list[dict]:
    import json

    return [doc for _, f in r.xrange(keys.REPLAY_EVENTS_STREAM) if (doc := json.loads(f[b"event"]))
            ["camera"] == camera]


def _two_jobs_and_a_live_camera(r, url: str) -> tuple[JobSpec, JobSpec]:
    done, cancelled = _spec("j1"), _spec("j2")
    assert _run_job(r, url, done) == "DONE"
    assert _run_job(r, url, cancelled, cancel_at=5) == "CANCELLED"
    for spec in (done, cancelled):
        _stage_writes(r, spec.replay_camera)
    _stage_writes(r, LIVE, live=True)
    return done, cancelled


def _check_only_that_job_is_gone(r, before: set[bytes], gone: JobSpec, kept: JobSpec,
                                 guards: set[bytes], cameras: set[bytes]) -> None:
    """``before``: every key before the purge; ``cameras``: the registered cameras then."""
    camera = gone.replay_camera
    after = _everything(r)
    mine = {k for k in before if keys.hash_tag(k) == camera}
    assert keys.frames_stream(camera).encode() in mine and len(mine) >= 12  # the set-up did write them
    assert after == before - mine - guards  # only its keys and its events' guards went
    assert not {k for k in after if camera.encode() in k}
    assert {keys.hash_tag(k) for k in after} >= {kept.replay_camera, LIVE}
    for stage in keys.DONE_STAGES:
        assert set(r.hkeys(keys.done_key(stage))) == {kept.replay_camera.encode(), LIVE.encode()}
    assert set(r.hkeys(keys.JOBS_KEY)) == set(r.hkeys(keys.JOB_STATES_KEY)) == {kept.job.encode()}
    assert _events_of(r, camera) == [] and len(_events_of(r, kept.replay_camera)) == 2
    assert r.xlen(keys.EVENTS_STREAM) == 2 and set(r.hkeys(keys.CAMERAS_KEY)) == cameras - {camera.encode()}


def test_purge_removes_every_key_of_the_job_and_nothing_else(r, redis_url, capsys):
    gone, kept = _two_jobs_and_a_live_camera(r, redis_url)
    guards = {keys.event_guard_key(e["id"]).encode() for e in _events_of(r, gone.replay_camera)}
    from workers.jobs.celery_app import make_app

    backend = make_app(load_settings(redis_url=redis_url)).backend
    backend.store_result(gone.job, {"published": CLIP_FRAMES}, "SUCCESS")  # what its task left
    result = backend.get_key_for_task(gone.job)
    before, cameras = _everything(r) - {result}, set(r.hkeys(keys.CAMERAS_KEY))
    assert main(["replay", "purge", "--redis", redis_url, gone.job]) == 0
    _check_only_that_job_is_gone(r, before, gone, kept, guards, cameras)
    out = capsys.readouterr().out
    assert out.startswith(f"job {gone.job}: purged camera {gone.replay_camera}: ")
    assert ", 2 events" in out and keys.recent_frames_stream(gone.replay_camera) in out
    assert result.decode() in out and not r.exists(result)
    assert main(["replay", "events", "--redis", redis_url, kept.job]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["replay", "events", "--redis", redis_url, gone.job]) == 2
    assert f"no replay job {gone.job!r}" in capsys.readouterr().err


def test_purge_on_a_cluster_touches_only_that_job(rc, cluster):
    kept, gone = _two_jobs_and_a_live_camera(rc, cluster.url)  # purge the cancelled one
    assert not rc.hexists(keys.CAMERAS_KEY, gone.replay_camera)  # a cancelled replay is unregistered at once
    rc.hset(keys.CAMERAS_KEY, gone.replay_camera, "{}")  # as a job that failed on a bug leaves it
    guards = {keys.event_guard_key(e["id"]).encode() for e in _events_of(rc, gone.replay_camera)}
    before, cameras = _everything(rc), set(rc.hkeys(keys.CAMERAS_KEY))
    (spec,) = purge.check_purgeable(rc, [gone.job])
    purged = purge.purge(rc, spec)
    assert purged.events == 2 and keys.job_cancel_key(gone.replay_camera) in purged.keys
    assert keys.CAMERAS_KEY in purged.fields
    _check_only_that_job_is_gone(rc, before, gone, kept, guards, cameras)


@pytest.mark.parametrize("state", ["QUEUED", "RUNNING", "DRAINING"])
def test_a_job_not_finished_is_refused_and_kept(r, redis_url, capsys, state):
    spec = _spec("j3")
    registry.register(r, spec)
    registry.set_state(r, spec.job, state)
    _stage_writes(r, spec.replay_camera)
    before = _everything(r)
    assert main(["replay", "purge", "--redis", redis_url, spec.job]) == 2
    err = capsys.readouterr().err.strip()
    assert f"job j3 is {state}, not finished: cancel it first" in err and len(err.splitlines()) == 1
    assert _everything(r) == before and r.hexists(keys.JOBS_KEY, spec.job)


@pytest.mark.parametrize("args,error", [
    (["nope"], "no replay job 'nope'"),
    (["j1", "nope"], "no replay job 'nope'"),  # checked before anything is purged
    ([], "give JOB ids or --finished"),
    (["j1", "--finished"], "give JOB ids or --finished"),
    (["--older-than", "1h"], "give --finished too"),
    (["--finished", "--older-than", "soon"], "expected a duration"),
])
def test_bad_input_is_one_line_and_removes_nothing(r, redis_url, capsys, args, error):
    spec = _spec("j1")
    registry.register(r, spec)
    registry.set_state(r, spec.job, "DONE")
    _stage_writes(r, spec.replay_camera)
    before = _everything(r)
    assert main(["replay", "purge", "--redis", redis_url, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert error in err and len(err.splitlines()) == 1, err
    assert _everything(r) == before


def test_purge_finished_older_than_purges_the_old_finished_job_only(r, redis_url, capsys):
    for job, state in (("old", "DONE"), ("new", "FAILED"), ("busy", "RUNNING")):
        registry.register(r, _spec(job))
        registry.set_state(r, job, state, clock=lambda: 1000.0 if job == "old" else 10**12)
    assert main(["replay", "purge", "--redis", redis_url, "--finished", "--older-than", "1d"]) == 0
    assert capsys.readouterr().out.startswith("job old: purged camera clip~old")
    assert set(r.hkeys(keys.JOBS_KEY)) == {b"new", b"busy"}
    assert main(["replay", "purge", "--redis", redis_url, "--finished", "--older-than", "1d"]) == 0
    assert capsys.readouterr().out.strip() == "no finished job to purge"


NOW = 1_000_000.0
JOBS = [(JobSpec(job=job, camera=LIVE, source="video", target="pose", path="x.mp4", created=created), state)
        for job, created, state in [
            ("d1", 1.0, {"state": "DONE", "updated": NOW - 1000}),
            ("c1", 1.0, {"state": "CANCELLED", "updated": NOW - 3600}),
            ("f1", 1.0, {"state": "FAILED", "updated": NOW - 2 * 86400, "reason": "corrupt"}),
            ("r1", 1.0, {"state": "RUNNING", "updated": NOW - 9 * 86400}),
            ("q1", 1.0, {"state": "QUEUED", "updated": NOW - 9 * 86400}),
            ("g1", 1.0, {"state": "DRAINING", "updated": NOW - 9 * 86400}),
            ("u1", 1.0, {"state": "UNKNOWN"}),
            ("n1", NOW - 5 * 86400, {"state": "DONE"}),  # no 'updated': its creation counts
        ]]


@pytest.mark.parametrize("older_than,expected,error", [
    (None, ["d1", "c1", "f1", "n1"], None),
    ("0", ["d1", "c1", "f1", "n1"], None),
    ("1000", ["d1", "c1", "f1", "n1"], None),  # ended exactly that long ago: selected
    ("1001s", ["c1", "f1", "n1"], None),
    ("1h", ["c1", "f1", "n1"], None),
    ("61m", ["f1", "n1"], None),
    ("2d", ["f1", "n1"], None),
    ("1w", [], None),
    ("1.5h", ["f1", "n1"], None),
    ("-5m", None, "expected a duration"),
    ("soon", None, "expected a duration"),
    ("", None, "expected a duration"),
    ("5y", None, "expected a duration"),
])
def test_finished_older_than_selects_by_the_time_a_job_ended(older_than, expected, error):
    if error:
        with pytest.raises(ReplayError, match=error):
            purge.select_finished(JOBS, NOW, purge.parse_duration(older_than))
        return
    older = None if older_than is None else purge.parse_duration(older_than)
    assert purge.select_finished(JOBS, NOW, older) == expected


NOT_KEYS = {"check_camera_id", "replay_camera", "split_replay", "is_replay", "camera_of_stream",
            "stage_stream", "camera_keys", "archived_streams"}  # take a camera, name no key of their own


def test_camera_keys_names_every_per_camera_key_of_shared_keys():
    """A per-camera key function added to shared/keys.py without camera_keys would leak."""
    camera = "cam-7~j1"
    listed = keys.camera_keys(camera)
    found = []
    for name, fn in inspect.getmembers(keys, inspect.isfunction):
        params = inspect.signature(fn).parameters
        if fn.__module__ != keys.__name__ or "camera" not in params or name in NOT_KEYS:
            continue
        stages = keys.CAMERA_STAGES if "stage" in params else [None]
        for stage in stages:
            key = fn(camera) if stage is None else fn(stage, camera)
            assert keys.hash_tag(key) == camera and key in listed, (name, key)
            found.append(key)
    assert sorted(found) == sorted(listed) and len(set(listed)) == len(listed)
