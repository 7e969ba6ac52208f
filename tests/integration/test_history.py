"""The event history end to end: real frames through the real pose worker (which keeps the
recent frames), events on a real Redis, `actionstream history` as a real process into SQLite
and into the local PostgreSQL, `actionstream events` reading it back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from producer.producer import Producer
from shared import codec, keys
from shared.modelpaths import resolve_pose_model
from shared.redisio import ensure_group
from shared.schemas import Event
from shared.settings import load_settings, make_camera
from tests.conftest import ROOT, shared_path
from tests.procs import wait_until
from tests.workers.history.history_helpers import BACKENDS, database_url
from workers.history import snapshots
from workers.history.recorder import HISTORY_GROUP
from workers.history.store import EventStore

pytestmark = pytest.mark.integration
CAMERA, CROP, FRAMES = "cam-h", (320, 0, 320, 240), 24


@pytest.fixture(scope="module")
def pose_model():
    from workers.pose.adapters import load_pose_model

    settings = load_settings(shared_dir=shared_path())
    return load_pose_model("movenet", resolve_pose_model("movenet", settings), threads=2)


def _pose_frames(redis_url, pose_model) -> None:
    """Publish a real clip and run the real pose worker over it (it fills the recent frames)."""
    from workers.pose.worker import PoseWorker

    settings = load_settings(redis_url=redis_url, shared_dir=shared_path(), mode="replay",
                             replay_max_lag=10_000, snapshot_frames=100)
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    Producer(settings, make_camera(id=CAMERA, source=video, crop=CROP)).run(max_frames=FRAMES)
    assert PoseWorker(settings, pose_model, "movenet", cameras=[CAMERA]).run(exit_on_eos=True) == 0


def _event(frame_end: int, track: int = 1) -> Event:
    now = time.time()
    return Event(camera=CAMERA, track_id=track, label="falling", label_index=1, score=0.8,
                 frame_start=max(0, frame_end - 20), frame_end=frame_end, ts_start=now - 1, ts_end=now,
                 model="fall", emitted_at=now)


def _emit(r, event: Event) -> None:
    r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(event)})


def _settled(r, store: EventStore, rows: int) -> bool:
    info = {g["name"].decode(): g for g in r.xinfo_groups(keys.EVENTS_STREAM)}[HISTORY_GROUP]
    return info["pending"] == 0 and info["lag"] == 0 and store.count() == rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_history_stores_each_event_once_with_its_snapshot(r, redis_url, pose_model, tmp_path, backend):
    _pose_frames(redis_url, pose_model)
    recent = [int(f[b"seq"]) for _, f in r.xrange(keys.recent_frames_stream(CAMERA))]
    assert recent == list(range(FRAMES))  # the pose worker kept every posed frame
    first, second, gone = _event(10), _event(20, track=2), _event(5000)
    with database_url(backend, tmp_path) as url:
        store = EventStore(url, tmp_path / "snapshots")
        ensure_group(r, keys.EVENTS_STREAM, HISTORY_GROUP)
        _emit(r, first)
        _emit(r, second)
        # a recorder read both, stored the second (with its picture) and crashed before any ack
        r.xreadgroup(HISTORY_GROUP, "history-crashed", {keys.EVENTS_STREAM: ">"})
        store.add(second, snapshots.snapshot_for(r, second))
        _emit(r, first)  # the first one delivered twice
        _emit(r, gone)  # its frame is long gone: stored without a picture
        r.xadd(keys.EVENTS_STREAM, {"event": b"{broken"})
        env = {**os.environ, "ACTIONSTREAM_REDIS_URL": redis_url, "ACTIONSTREAM_HISTORY_URL": url,
               "ACTIONSTREAM_SNAPSHOTS_DIR": str(tmp_path / "snapshots"),
               "ACTIONSTREAM_DATA_DIR": str(tmp_path / "data")}
        log = tmp_path / "history.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "workers", "history", "--claim-idle-s", "0.5"],
                                    cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=subprocess.STDOUT)
        try:
            assert wait_until(lambda: _settled(r, store, 3), timeout=90), log.read_text()[-3000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        assert code == 0, log.read_text()[-3000:]
        rows = {row["id"]: row for row in store.query()}
        assert sorted(rows) == sorted([first.id, second.id, gone.id]) and store.count() == 3
        assert rows[gone.id]["snapshot"] is None
        for e in (first, second):
            assert rows[e.id]["snapshot"] == f"/snapshots/{e.id}.jpg"
            image = cv2.imdecode(np.fromfile(store.snapshot_path(e.id), np.uint8), cv2.IMREAD_COLOR)
            assert image is not None and image.shape == (CROP[3], CROP[2], 3)
        dead = [codec.decode_dead_letter(f) for _, f in r.xrange(keys.DEADLETTER_STREAM)]
        assert [d.stage for d in dead] == [HISTORY_GROUP] and "not JSON" in dead[0].reason
        out = subprocess.run([sys.executable, "-m", "workers", "events", "--since", "1h", "--camera",
                              CAMERA, "--label", "falling"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        listed = [json.loads(line) for line in out.stdout.splitlines()]
        assert sorted(row["id"] for row in listed) == sorted(rows)
        store.close()
