"""The pipeline on a real Redis Cluster (3 primaries, 3 replicas, from the shipped server
binary): cameras on three different primaries, and a primary SIGKILLed mid-run.

What a failover can lose (README, "Redis Cluster"): replication is asynchronous, so
writes a primary acknowledged but had not yet sent to its replica die with it. Every key
of a camera sits on one slot, so the promoted replica holds a *prefix* of that camera's
history, and a fenced write (outputs + state + acks in one script) is replicated whole or
not at all: the stages redo what was lost from the state that survived. Only frames the
producer published in that last moment can be gone for good (it does not re-read its
stream), so the guarantee tested is: other primaries' cameras lose nothing; the killed
primary's camera has every frame at most once, in order, with at most one gap, and the
run still reaches every camera's end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from redis.crc import key_slot

from shared import codec, heartbeat, keys
from shared.redisio import ensure_group
from shared.schemas import Event, Skeletons
from shared.settings import Settings
from tests.conftest import ROOT, shared_path, SHORT_CLIP_RULE
from tests.webhook_receiver import WebhookReceiver, planned

pytestmark = pytest.mark.integration

# hash slots 3439, 6042 and 15628: one camera on each primary of three equal slot ranges
CAMERAS = ("cam-a", "cam-1", "cam-b")
CLIPS = {"cam-a": "fall-16-cam0.mp4", "cam-1": "fall-14-cam0.mp4", "cam-b": "fall-18-cam0.mp4"}
FRAMES = {"fall-16-cam0.mp4": 55, "fall-14-cam0.mp4": 61, "fall-18-cam0.mp4": 65, "fall-01-cam0.mp4": 160}


def _up(url: str, clips: dict[str, str], *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "workers", "up", "--no-progress", "--no-web", "--redis", url]
    for cam, clip in clips.items():
        argv += ["--source", str(shared_path("data", "urfd", clip)), "--camera", cam]
    env = dict(os.environ, ACTIONSTREAM_SHARED_DIR=str(shared_path()), ACTIONSTREAM_LEASE_TTL_S="3",
               **SHORT_CLIP_RULE)
    return subprocess.Popen([*argv, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"up did not finish: {err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return err


def _skeleton_seqs(r, camera: str) -> list[int]:
    out = []
    for _, fields in r.xrange(keys.skeletons_stream(camera)):
        msg = codec.decode_skeletons(fields)
        if isinstance(msg, Skeletons):
            out.append(msg.seq)
    return out


def _events(path) -> set[tuple[str, str]]:
    return {(e.camera, e.id) for e in map(codec.decode_event, path.read_text().splitlines())}


def test_cameras_on_three_primaries_run_as_on_one_server(cluster, rc, redis_url, tmp_path):
    assert len({cluster.primary_port(key_slot(c.encode())) for c in CAMERAS}) == 3
    on_cluster, on_one = tmp_path / "cluster.jsonl", tmp_path / "one.jsonl"
    _finish(_up(cluster.url, CLIPS, "--events-out", str(on_cluster), "--no-history"))
    _finish(_up(redis_url, CLIPS, "--events-out", str(on_one), "--no-history"))

    for cam in CAMERAS:
        n = FRAMES[CLIPS[cam]]
        assert _skeleton_seqs(rc, cam) == list(range(n)), cam
        for stage in (keys.POSE_GROUP, keys.ACTION_GROUP):
            assert int(rc.hget(keys.done_key(stage), cam)) == n, (stage, cam)
        assert rc.xpending(keys.frames_stream(cam), keys.POSE_GROUP)["pending"] == 0
    events = _events(on_cluster)
    assert {cam for cam, _ in events} == set(CAMERAS)  # each clip is a fall
    assert events == _events(on_one)
    assert rc.xlen(keys.DEADLETTER_STREAM) == 0


def _gaps(seqs: list[int], n: int) -> list[tuple[int, int]]:
    """The runs of 0..n-1 missing from ``seqs``, as (first, last)."""
    present, runs = set(seqs), []
    for s in range(n):
        if s not in present:
            if runs and runs[-1][1] == s - 1:
                runs[-1] = (runs[-1][0], s)
            else:
                runs.append((s, s))
    return runs


def test_a_primary_killed_mid_run_fails_over_and_the_run_completes(cluster, rc, tmp_path):
    victim = "cam-1"
    clips = dict(CLIPS, **{victim: "fall-01-cam0.mp4"})
    slot = key_slot(victim.encode())
    port = cluster.primary_port(slot)
    proc = _up(cluster.url, clips, "--no-history")
    deadline = time.monotonic() + 120
    while rc.xlen(keys.skeletons_stream(victim)) < 30:  # mid-run: the pipeline is flowing
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.05)
    written_before = rc.xlen(keys.skeletons_stream(victim))
    cluster.kill(port)
    err = _finish(proc)

    assert written_before < FRAMES[clips[victim]]  # the kill came while the camera ran
    assert cluster.primary_port(slot) != port  # its replica was promoted
    for cam in CAMERAS:
        n = FRAMES[clips[cam]]
        seqs = _skeleton_seqs(rc, cam)
        assert seqs == sorted(set(seqs)), (cam, seqs, err[-20000:])  # each frame at most once, in order
        assert int(rc.hget(keys.done_key(keys.POSE_GROUP), cam)) == n, cam
        assert int(rc.hget(keys.done_key(keys.ACTION_GROUP), cam)) == n, cam
        if cam != victim:
            assert seqs == list(range(n)), cam  # other primaries lose nothing
    ids = [codec.decode_event(f[b"event"]).id for _, f in rc.xrange(keys.EVENTS_STREAM)]
    assert len(ids) == len(set(ids))  # the events' primary died too (slot 9102): no event twice
    lost = _gaps(_skeleton_seqs(rc, victim), FRAMES[clips[victim]])
    assert len(lost) <= 1, lost  # at most the producer's last unreplicated frames
    print(f"primary kill: frames of {victim} lost at failover: {lost or 'none'}")
    assert "reconnect" in err or "unreachable" in err  # the stages did see the failover


def test_alerts_follow_the_clusters_events_with_celery_on_a_plain_redis(cluster, rc, redis_url, tmp_path):
    """kombu has no Redis Cluster transport: Celery's broker is ACTIONSTREAM_BROKER_URL."""
    from workers.alerting import service as alerts

    hooks = WebhookReceiver(planned({"/ok": [200]}))
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=cluster.url, ACTIONSTREAM_BROKER_URL=redis_url)
    with open(tmp_path / "worker.log", "w") as fh:
        argv = [sys.executable, "-m", "workers", "alerts-worker", "--concurrency", "1"]
        worker = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                  stderr=subprocess.STDOUT)
    try:
        evs = [Event(camera=cam, track_id=1, label="falling", label_index=1, score=0.9, frame_start=0,
                     frame_end=47, ts_start=0.0, ts_end=1.6, model="fall", emitted_at=2.0) for cam in CAMERAS]
        for ev in evs:
            rc.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(ev)})
        rc.xadd(keys.EVENTS_STREAM, {"event": b'{"schema_version": 1, "camera": '})  # truncated
        app = alerts.make_app(Settings(redis_url=cluster.url, broker_url=redis_url))
        assert alerts.forward_events(rc, app, [hooks.url("/ok")], burst=True, block_ms=200) == len(evs)
        got = hooks.wait("/ok", len(evs), 200, timeout=60)
        assert sorted(e["id"] for e in got) == sorted(ev.id for ev in evs)
        assert rc.xpending(keys.EVENTS_STREAM, alerts.ALERTS_GROUP)["pending"] == 0
        (dead,) = rc.xrange(keys.DEADLETTER_STREAM)  # another slot than the events: still written
        assert "undecodable event" in codec.decode_dead_letter(dead[1]).reason
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        hooks.server.shutdown()



def test_the_archiver_keeps_the_streams_of_every_primary_and_leaves_nothing_pending(rc, cluster, tmp_path):
    """One XREADGROUP over streams of many slots is refused by a cluster (CROSSSLOT): the
    archiver reads per slot and acks per node; entries trimmed while pending are not left
    pending either."""
    from tests.workers.archive.archive_helpers import (Clock, event, pending, publish_event, publish_frames,
                                                       publish_skeletons, settings)
    from workers.archive.archiver import Archiver
    from workers.archive.reader import ArchiveReader
    from workers.archive.storage import LocalStorage

    ids = {}
    for cam in CAMERAS:
        ids[cam] = publish_frames(rc, cam, range(12), eos=True)
        publish_skeletons(rc, cam, range(12))
        publish_event(rc, event(cam, 11))
    stream = keys.frames_stream("cam-1")
    ensure_group(rc, stream, keys.ARCHIVE_GROUP)
    rc.xreadgroup(keys.ARCHIVE_GROUP, "archive-1", {stream: ">"}, count=4)  # read, then the archiver died
    rc.xtrim(stream, minid=ids["cam-1"][2], approximate=False)  # frames 0 and 1: gone unarchived
    storage = LocalStorage(tmp_path / "archive", writer=True)
    try:
        archiver = Archiver(rc, storage, settings(cluster.url, storage.root), block_ms=50, clock=Clock())
        while archiver.tick():  # a read across slots that the cluster refuses raises here
            pass
        reader = ArchiveReader(storage)
        for cam in CAMERAS:
            first = 2 if cam == "cam-1" else 0
            assert [rec.seq for rec in reader.read(cam, "frames")] == list(range(first, 12)), cam
            assert [rec.seq for rec in reader.read(cam, "skeletons")] == list(range(12)), cam
            assert [rec.seq for rec in reader.read(cam, "events")] == [11], cam
            assert pending(rc, keys.frames_stream(cam)) == pending(rc, keys.skeletons_stream(cam)) == 0
        assert pending(rc, keys.EVENTS_STREAM) == 0 and archiver.metrics["stored"] == 3 * 12 * 2 - 2 + 3
    finally:
        storage.close()



def test_the_pose_trim_floor_is_read_from_every_primary(rc):
    """The pose stage's trim stops at the archive group's floor of each stream, asked of the
    node serving it (a stream without the group, or none at all, has no floor)."""
    from workers.pose.worker import group_floors

    ids = {cam: [rc.xadd(keys.frames_stream(cam), {"n": i}).decode() for i in range(4)] for cam in CAMERAS}
    for cam in CAMERAS[:2]:
        ensure_group(rc, keys.frames_stream(cam), keys.ARCHIVE_GROUP)
    rc.xreadgroup(keys.ARCHIVE_GROUP, "a", {keys.frames_stream("cam-a"): ">"}, count=3)
    rc.xack(keys.frames_stream("cam-a"), keys.ARCHIVE_GROUP, ids["cam-a"][0])  # 1 and 2 pending
    rc.xreadgroup(keys.ARCHIVE_GROUP, "a", {keys.frames_stream("cam-1"): ">"}, count=2)
    rc.xack(keys.frames_stream("cam-1"), keys.ARCHIVE_GROUP, *ids["cam-1"][:2])  # none pending
    streams = [keys.frames_stream(c) for c in (*CAMERAS, "cam-none")]
    assert group_floors(rc, streams, keys.ARCHIVE_GROUP) == {
        keys.frames_stream("cam-a"): ids["cam-a"][1], keys.frames_stream("cam-1"): ids["cam-1"][1]}


def test_the_archive_of_a_cluster_run_replays_as_a_celery_job_to_the_live_events(cluster, rc, r, redis_url,
                                                                                  tmp_path):
    """The archiver, the stages and a replay job all on the cluster (the replay camera on a
    slot of its own, its publish script on that slot), Celery's broker a plain Redis."""
    from tests.integration.test_replay_jobs import Procs, _reader, events_of, jpegs
    from tests.procs import wait_until

    clips = {cam: CLIPS[cam] for cam in ("cam-a", "cam-b")}  # two primaries
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=cluster.url, ACTIONSTREAM_BROKER_URL=redis_url,
               ACTIONSTREAM_SHARED_DIR=str(shared_path()), ACTIONSTREAM_DATA_DIR=str(tmp_path / "data"),
               **SHORT_CLIP_RULE,
               ACTIONSTREAM_LEASE_TTL_S="2", ACTIONSTREAM_SNAPSHOT_FRAMES="1000",
               ACTIONSTREAM_MAX_LAG_S="120", ACTIONSTREAM_THREADS="1", ACTIONSTREAM_LOG_LEVEL="INFO")
    procs = Procs(tmp_path, env)
    try:
        procs.start("archive", "archive")
        assert wait_until(lambda: heartbeat.live_workers(rc, keys.ARCHIVE_GROUP), 30), procs.log("archive")
        for name in ("pose-worker", "action-worker"):
            procs.start(name, name)
        procs.start("jobs", "jobs-worker", "--concurrency", "1")
        for cam, clip in clips.items():
            procs.start(f"producer-{cam}", "produce", "--source", str(shared_path("data", "urfd", clip)),
                        "--camera", cam)
        for cam in clips:
            assert procs.procs[f"producer-{cam}"].wait(60) == 0, procs.log(f"producer-{cam}")
        finished = lambda: all(rc.hexists(keys.done_key(keys.ACTION_GROUP), c) for c in clips)  # noqa: E731
        assert wait_until(finished, 120), procs.log("action-worker")
        reader = _reader(tmp_path)
        for cam, clip in clips.items():  # every frame, the very bytes the pose stage got
            complete = lambda: reader.count(cam, "skeletons") == FRAMES[clip]  # noqa: E731
            assert wait_until(complete, 30), procs.log("archive")
            archived = {rec.seq: codec.decode_frame(rec.fields).jpeg for rec in reader.read(cam, "frames")}
            assert sorted(archived) == list(range(FRAMES[clip])) and archived == jpegs(rc, cam), cam
        live = events_of(rc, keys.EVENTS_STREAM, "cam-a")
        assert any(e.label == "falling" for e in live), "the live run raised no falling event"

        job = procs.submit("--camera", "cam-a")
        code, out, err = procs.cli("replay", "status", job, "--follow")
        assert code == 0 and "DONE" in out, (out, err[-2000:], procs.log("jobs"))
        camera = keys.replay_camera("cam-a", job)
        replayed = events_of(rc, keys.REPLAY_EVENTS_STREAM, camera)
        assert sorted((e.label, e.frame_start, e.frame_end) for e in replayed) == \
            sorted((e.label, e.frame_start, e.frame_end) for e in live)
        assert jpegs(rc, camera) == jpegs(rc, "cam-a")
        code, out, _ = procs.cli("replay", "events", job)
        assert code == 0 and [codec.decode_event(line) for line in out.splitlines()] == replayed
        on_live = {codec.decode_event(f[b"event"]).camera for _, f in rc.xrange(keys.EVENTS_STREAM)}
        assert on_live <= set(clips)  # nothing of the replay camera on the live events stream
    finally:
        procs.stop()
