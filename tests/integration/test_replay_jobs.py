"""Replay jobs end to end: a real Redis broker, a real Celery jobs-worker, real pose and
action workers with the real models, the archiver, and real clips.

* a live run of a fall clip with the archiver on, then replays of the archived stretch:
  frames (the replay's events equal the live run's, its frames are the producer's bytes)
  and skeletons with other rules (the expected first events, from the live run's scores),
  three replays at once on the same camera;
* a cancel stops a replay; a kill -9 of the jobs-worker mid-replay, then another worker
  completes it with every frame published once; a corrupt video fails its job and the
  worker goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shared import codec, heartbeat, keys
from shared.schemas import EndOfStream, Frame
from shared.settings import load_settings
from tests.conftest import ROOT, shared_path
from tests.procs import wait_until
from workers.jobs import registry
from workers.jobs.replay import Checkpoint

pytestmark = pytest.mark.integration
CROP = "320,0,320,240"
LIVE = "live-1"


class Procs:
    """The test's processes (``actionstream`` commands), each logging to a file."""

    def __init__(self, tmp_path, env):
        self.tmp, self.env, self.procs = tmp_path, env, {}

    def start(self, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        with open(self.tmp / f"{name}.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "workers", *args], cwd=ROOT,
                                    env=dict(self.env, **(env or {})), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()[-3000:]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cli(self, *args) -> tuple[int, str, str]:
        """An ``actionstream`` command run to its end: (exit code, stdout, stderr)."""
        proc = subprocess.run([sys.executable, "-m", "workers", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr

    def submit(self, *args) -> str:
        rc, out, err = self.cli("replay", "submit", *args)
        assert rc == 0, err
        return out.strip().splitlines()[-1]


@pytest.fixture
def procs(r, redis_url, tmp_path):
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_SHARED_DIR=str(shared_path()),
               ACTIONSTREAM_DATA_DIR=str(tmp_path / "data"), ACTIONSTREAM_LEASE_TTL_S="2",
               ACTIONSTREAM_JOBS_VISIBILITY_TIMEOUT_S="4", ACTIONSTREAM_SNAPSHOT_FRAMES="1000",
               ACTIONSTREAM_MAX_LAG_S="120", ACTIONSTREAM_THREADS="1", ACTIONSTREAM_LOG_LEVEL="INFO",
               # the rule alone decides here, 0.5 x 2 (first_falling reads the scores; the posture
               # confirmation is tested in tests/workers/action/test_confirm.py)
               ACTIONSTREAM_CONFIRM_FALLS="false", ACTIONSTREAM_ALERT_THRESHOLD="0.5",
               ACTIONSTREAM_ALERT_CONSECUTIVE="2")
    p = Procs(tmp_path, env)
    yield p
    p.stop()




def state(r, job) -> str:
    return registry.state_of(r, job)["state"]


def published(r, job) -> Checkpoint:
    spec = registry.spec_of(r, job)
    return Checkpoint.from_hash(r.hgetall(keys.job_checkpoint_key(spec.replay_camera)))


def events_of(r, stream, camera):
    evs = [codec.decode_event(f[b"event"]) for _, f in r.xrange(stream)]
    return [e for e in evs if e.camera == camera]


def jpegs(r, camera) -> dict[int, bytes]:
    """seq -> JPEG of the frames the pose stage received for ``camera`` (its recent frames)."""
    return {int(f[b"seq"]): f[b"jpeg"] for _, f in r.xrange(keys.recent_frames_stream(camera))}


def first_falling(scores, threshold: float, consecutive: int) -> dict[int, int]:
    """Track -> frame_end of its first ``falling`` event by these rules, from the classified
    windows' top labels (``falling`` >= threshold >= 0.5 is the top label of two)."""
    streak: dict[int, int] = {}
    first: dict[int, int] = {}
    for f in scores:
        track = int(f[b"track_id"])
        hit = f[b"label"] == b"falling" and float(f[b"score"]) >= threshold
        streak[track] = streak.get(track, 0) + 1 if hit else 0
        if streak[track] >= consecutive and track not in first:
            first[track] = int(f[b"frame_end"])
    return first


def _first_by_track(events) -> dict[int, int]:
    first: dict[int, int] = {}
    for e in events:
        if e.label == "falling":
            first[e.track_id] = min(first.get(e.track_id, e.frame_end), e.frame_end)
    return first


def test_replays_of_the_archive_reproduce_the_live_run_and_try_other_rules(r, procs, tmp_path):
    video = str(shared_path("data", "urfd", "fall-05-cam0.mp4"))
    frames = 151
    procs.start("archive", "archive")
    # the producer creates the archive group when an archiver is alive: frames are archived
    # from the first one on, although the archiver re-lists cameras only every few seconds
    assert wait_until(lambda: heartbeat.live_workers(r, keys.ARCHIVE_GROUP), 30), procs.log("archive")
    for stage in ("pose-worker", "action-worker"):
        procs.start(stage, stage)
    procs.start("jobs", "jobs-worker", "--concurrency", "3")
    live = procs.start("producer", "produce", "--source", video, "--camera", LIVE, "--crop", CROP)
    assert live.wait(60) == 0, procs.log("producer")
    finished = lambda: r.hexists(keys.done_key(keys.ACTION_GROUP), LIVE)  # noqa: E731
    assert wait_until(finished, 120), procs.log("action-worker")
    reader = _reader(tmp_path)
    assert wait_until(lambda: reader.count(LIVE, "skeletons") == frames, 30), procs.log("archive")
    assert reader.count(LIVE, "frames") == frames
    live_events = events_of(r, keys.EVENTS_STREAM, LIVE)
    assert any(e.label == "falling" for e in live_events), "the live run raised no falling event"

    # bad input: clear errors at submit, nothing queued
    last_ts = max(rec.ts for rec in reader.read(LIVE, "frames"))
    rc, _, err = procs.cli("replay", "submit", "--camera", LIVE, "--start", str(last_ts + 60))
    assert rc == 2 and "no archived frames" in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = procs.cli("replay", "submit", "--camera", "nobody")
    assert rc == 2 and "nothing archived" in err, err

    channel = r.pubsub(ignore_subscribe_messages=True)
    channel.subscribe(keys.EVENTS_CHANNEL)  # live alerts listen here: no replay event may come
    jobs = {"frames": procs.submit("--camera", LIVE),
            "consecutive": procs.submit("--camera", LIVE, "--skeletons", "--consecutive", "1"),
            "threshold": procs.submit("--camera", LIVE, "--skeletons", "--threshold", "0.985")}
    for job in jobs.values():  # three replays at once on one camera
        rc, out, err = procs.cli("replay", "status", job, "--follow")
        assert rc == 0 and "DONE" in out, (out, err[-2000:], procs.log("jobs"))
    cams = {name: keys.replay_camera(LIVE, job) for name, job in jobs.items()}

    # the frames replay: the live run's events (labels, windows, tracks), the producer's bytes
    replayed = events_of(r, keys.REPLAY_EVENTS_STREAM, cams["frames"])
    window = [(e.track_id, e.label, e.frame_start, e.frame_end) for e in replayed]
    assert sorted(window) == sorted((e.track_id, e.label, e.frame_start, e.frame_end) for e in live_events)
    assert all(e.job == jobs["frames"] for e in replayed) and not any(e.job for e in live_events)
    sent = jpegs(r, LIVE)
    assert len(sent) == frames and jpegs(r, cams["frames"]) == sent
    archived = {rec.seq: codec.decode_frame(rec.fields).jpeg for rec in reader.read(LIVE, "frames")}
    assert archived == sent
    # replays never reach the live events stream (nor its alerts and history)
    assert {json.loads(f[b"event"])["camera"] for _, f in r.xrange(keys.EVENTS_STREAM)} == {LIVE}
    assert channel.get_message(timeout=0.5) is None
    rc, out, _ = procs.cli("replay", "events", jobs["frames"])
    assert rc == 0 and [codec.decode_event(line) for line in out.splitlines()] == replayed

    # the skeleton replays: the first falling event per track is the one their rules expect
    scores = [f for _, f in r.xrange(keys.scores_stream(LIVE))]
    assert _first_by_track(live_events) == first_falling(scores, 0.5, 2)
    for name, rules in (("consecutive", (0.5, 1)), ("threshold", (0.985, 2))):
        got = _first_by_track(events_of(r, keys.REPLAY_EVENTS_STREAM, cams[name]))
        assert got == first_falling(scores, *rules), name
    earlier = _first_by_track(events_of(r, keys.REPLAY_EVENTS_STREAM, cams["consecutive"]))
    later = _first_by_track(events_of(r, keys.REPLAY_EVENTS_STREAM, cams["threshold"]))
    print("first falling frame by track: live", _first_by_track(live_events), "consecutive 1", earlier,
          "threshold 0.985", later)
    rc, out, _ = procs.cli("replay", "list")
    assert rc == 0 and all(job in out for job in jobs.values()) and out.count("DONE") == 3, out


def _groups(r, stream):
    try:
        return r.xinfo_groups(stream)
    except Exception:
        return []


def _reader(tmp_path):
    from workers.jobs.replay_sources import open_reader

    return open_reader(load_settings(data_dir=tmp_path / "data"))


def _frames(r, camera) -> list:
    return [codec.decode_frame(f) for _, f in r.xrange(keys.frames_stream(camera))]


NO_PIPELINE = {"ACTIONSTREAM_REPLAY_MAX_LAG": "100000"}  # no pose worker: nothing to wait for


def test_cancel_stops_a_replay_within_a_second(r, procs):
    video = str(shared_path("data", "urfd", "fall-03-cam0.mp4"))
    procs.start("jobs", "jobs-worker", "--concurrency", "2", env=NO_PIPELINE)
    job = procs.submit("--source", video, "--camera", "clip", "--speed", "1")
    assert wait_until(lambda: published(r, job).published >= 10, 60), procs.log("jobs")
    t0 = time.monotonic()
    rc, out, _ = procs.cli("replay", "cancel", job)
    assert rc == 0 and "CANCELLED" in out, out
    print(f"cancel took {time.monotonic() - t0:.2f} s (the command, with its process start)")
    at_cancel = published(r, job)
    time.sleep(1.0)
    assert published(r, job) == at_cancel and at_cancel.eos and at_cancel.published < 215
    msgs = _frames(r, keys.replay_camera("clip", job))
    assert isinstance(msgs[-1], EndOfStream) and len(msgs) == at_cancel.published + 1


def test_a_stopped_or_killed_jobs_worker_leaves_the_job_to_another_that_publishes_every_frame_once(r, procs):
    video = str(shared_path("data", "urfd", "fall-03-cam0.mp4"))
    total = 215
    first = procs.start("jobs-1", "jobs-worker", "--concurrency", "1", env=NO_PIPELINE)
    job = procs.submit("--source", video, "--camera", "clip", "--speed", "2")
    assert wait_until(lambda: published(r, job).published >= 30, 60), procs.log("jobs-1")
    first.terminate()  # a warm shutdown hands the job back to the queue at once
    assert first.wait(15) == 0
    at_stop = published(r, job).published
    second = procs.start("jobs-2", "jobs-worker", "--concurrency", "1", env=NO_PIPELINE)
    assert wait_until(lambda: published(r, job).published >= at_stop + 30, 60), procs.log("jobs-2")
    second.send_signal(signal.SIGKILL)
    second.wait()
    at_kill = published(r, job).published
    assert at_stop < at_kill < total, "the kill did not land mid-replay"
    procs.start("jobs-3", "jobs-worker", "--concurrency", "1", env=NO_PIPELINE)
    assert wait_until(lambda: published(r, job).eos, 90), procs.log("jobs-3")
    msgs = _frames(r, keys.replay_camera("clip", job))
    seqs = [m.seq for m in msgs if isinstance(m, Frame)]
    assert seqs == list(range(total)), "a frame is missing or published twice"
    assert [m.seq for m in msgs if isinstance(m, EndOfStream)] == [total]
    assert state(r, job) == "DRAINING"  # no pipeline runs here to finish it
    assert "resumes after seq" in procs.log("jobs-2") and "resumes after seq" in procs.log("jobs-3")


def test_a_corrupt_video_fails_its_job_and_the_worker_goes_on(r, procs, tmp_path):
    import cv2
    import numpy as np

    path = tmp_path / "corrupt.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    for i in range(60):
        writer.write(np.full((120, 160, 3), 4 * i, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) * 3 // 4] = bytes(len(data) // 4)  # zeros from the middle on
    path.write_bytes(bytes(data))
    procs.start("jobs", "jobs-worker", "--concurrency", "1", env=NO_PIPELINE)
    bad = procs.submit("--source", str(path))
    good = procs.submit("--source", str(shared_path("data", "urfd", "fall-16-cam0.mp4")))
    assert wait_until(lambda: registry.is_final(state(r, bad)), 60), procs.log("jobs")
    doc = registry.state_of(r, bad)
    assert doc["state"] == "FAILED" and "corrupt or truncated" in doc["reason"], doc
    assert wait_until(lambda: published(r, good).eos, 60), procs.log("jobs")
    assert published(r, good).published == 55
    rc, out, _ = procs.cli("replay", "status", bad)
    assert rc == 0 and "FAILED" in out and "corrupt" in out, out
