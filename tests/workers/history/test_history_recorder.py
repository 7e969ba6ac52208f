"""The history recorder on a real Redis server, into each database; snapshots drawn from the
recent-frames stream."""

from __future__ import annotations

import json
import sqlite3
import threading

import cv2
import numpy as np
import pytest

from shared import codec, keys
from shared.redisio import ensure_group
from shared.schemas import Event, Skeletons
from shared.skeleton import Person
from tests.procs import wait_until
from tests.workers.history.history_helpers import make_event
from workers.history import snapshots
from workers.history.recorder import HISTORY_GROUP, HistoryRecorder
from workers.history.store import EventStore

W, H = 160, 120


def jpeg_of(seq: int) -> bytes:
    image = np.full((H, W, 3), seq % 256, np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def person(track: int = 1) -> Person:
    kp = np.zeros((18, 3), np.float32)
    kp[1] = (80, 40, 0.9)  # neck
    kp[8] = (75, 80, 0.9)  # right hip
    kp[11] = (85, 80, 0.9)  # left hip
    return Person(kp, np.array([60, 20, 100, 110], np.float32), 0.9, track)


def put_frames(r, camera: str, seqs, maxlen=None) -> None:
    """Recent frames as the pose worker writes them: the skeletons message plus the JPEG."""
    for seq in seqs:
        skel = Skeletons(camera, seq, seq / 30, W, H, (person(),), "movenet")
        r.xadd(keys.recent_frames_stream(camera), {**codec.encode_skeletons(skel), "jpeg": jpeg_of(seq)},
               maxlen=maxlen, approximate=False)


def emit(r, event: Event) -> None:
    r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(event)})


def pending(r) -> int:
    return r.xpending(keys.EVENTS_STREAM, HISTORY_GROUP)["pending"]


def recorder(r, store, **kw) -> HistoryRecorder:
    kw.setdefault("block_ms", 50)
    return HistoryRecorder(r, store, **kw)


def test_find_frame_walks_back_to_the_seq(r):
    put_frames(r, "cam-1", range(100))
    skel, jpeg = snapshots.find_frame(r, "cam-1", 42, page=8)
    assert skel.seq == 42 and jpeg == jpeg_of(42)


@pytest.mark.parametrize("seqs, wanted, reason", [
    (range(50, 100), 10, "older than the recent frames"),
    ([1, 2, 4, 5], 3, "not among the recent frames"),  # a frame skipped as stale
    ([], 3, "older than the recent frames"),
])
def test_find_frame_says_when_the_frame_is_gone(r, seqs, wanted, reason):
    put_frames(r, "cam-1", seqs)
    with pytest.raises(snapshots.SnapshotMissing, match=reason):
        snapshots.find_frame(r, "cam-1", wanted, page=8)


def test_render_draws_on_a_frame_of_the_same_size():
    skel = Skeletons("cam-1", 5, 0.1, W, H, (person(3),), "movenet")
    out = snapshots.render(jpeg_of(5), skel, make_event(track=3, frame_end=5))
    image = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (H, W, 3)
    plain = cv2.imdecode(np.frombuffer(jpeg_of(5), np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(image.astype(int) - plain.astype(int)).max() > 100  # skeleton and banner drawn
    with pytest.raises(ValueError, match="cannot be decoded"):
        snapshots.render(b"\xff\xd8 broken", skel, make_event())


def test_each_event_is_stored_once_with_its_snapshot(r, store):
    put_frames(r, "cam-1", range(30))
    first, second = make_event(frame_end=20), make_event(track=2, frame_end=25)
    for e in (first, second, first):  # the first one delivered twice
        emit(r, e)
    rec = recorder(r, store)
    assert rec.run(burst=True) == 2
    assert rec.metrics["duplicates"] == 1 and pending(r) == 0
    rows = {row["id"]: row for row in store.query()}
    assert set(rows) == {first.id, second.id}
    for e in (first, second):
        image = cv2.imread(str(store.snapshot_path(e.id)))
        assert image.shape == (H, W, 3)


def test_an_event_whose_frame_is_gone_is_stored_without_a_picture(r, store):
    put_frames(r, "cam-1", range(100, 130))
    event = make_event(frame_end=20)
    emit(r, event)
    recorder(r, store).run(burst=True)
    assert [(row["id"], row["snapshot"]) for row in store.query()] == [(event.id, None)]


@pytest.mark.parametrize("fields, reason", [
    ({"event": "not json"}, "not JSON"),
    ({"other": "x"}, "not JSON"),
    ({"event": json.dumps({**codec.event_to_dict(make_event()), "id": "../../x"})}, "event id"),
    ({"event": json.dumps({**codec.event_to_dict(make_event()), "score": "high"})}, "score"),
    ({"event": json.dumps({**codec.event_to_dict(make_event()), "camera": "c" * 100})}, "camera id"),
    ({"event": json.dumps({**codec.event_to_dict(make_event()), "label": "fall\x00"})}, "label"),
    ({"event": json.dumps({**codec.event_to_dict(make_event()), "model": "m" * 300})}, "model"),
    ({"event": json.dumps({**codec.event_to_dict(make_event()), "track_id": 2**40})}, "32-bit"),
    ({"event": json.dumps({**codec.event_to_dict(make_event()), "frame_end": -1})}, "frame_end"),
])
def test_bad_entries_are_dead_lettered_and_the_rest_stored(r, store, fields, reason):
    r.xadd(keys.EVENTS_STREAM, fields)
    good = make_event(frame_end=7)
    emit(r, good)
    rec = recorder(r, store)
    rec.run(burst=True)
    assert [row["id"] for row in store.query()] == [good.id]
    assert pending(r) == 0 and rec.metrics["dead"] == 1
    [(_, dl)] = r.xrange(keys.DEADLETTER_STREAM)
    letter = codec.decode_dead_letter(dl)
    assert letter.stage == HISTORY_GROUP and reason in letter.reason


def test_events_pending_at_a_crashed_recorder_are_claimed(r, store):
    ensure_group(r, keys.EVENTS_STREAM, HISTORY_GROUP)
    stored, lost = make_event(frame_end=1), make_event(frame_end=2)
    emit(r, stored)
    emit(r, lost)
    # the crashed recorder read both, stored the first and died before acking either
    r.xreadgroup(HISTORY_GROUP, "history-crashed", {keys.EVENTS_STREAM: ">"})
    store.add(stored, None)
    rec = recorder(r, store, consumer="history-2", claim_idle_ms=0)
    rec.run(burst=True)
    assert rec.metrics["claimed"] == 2 and pending(r) == 0
    assert sorted(row["id"] for row in store.query()) == sorted([stored.id, lost.id])
    assert store.count() == 2


def test_the_recorder_purges_events_past_retention(r, store, clock):
    store.add(make_event(frame_end=1, emitted_at=clock.now - 3 * 86400), None)
    fresh = make_event(frame_end=2, emitted_at=clock.now)
    emit(r, fresh)
    rec = recorder(r, store, retention_s=2 * 86400)
    rec.run(burst=True)
    assert rec.metrics["purged"] == 1
    assert [row["id"] for row in store.query()] == [fresh.id]


def test_nothing_is_acked_while_the_database_is_away(r, tmp_path):
    """SQLite locked by another writer: the recorder backs off, acks nothing, then stores."""
    path = tmp_path / "locked.db"
    store = EventStore(f"sqlite:///{path}", tmp_path / "snaps", busy_timeout_s=0.1)
    event = make_event(frame_end=3)
    emit(r, event)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    rec = recorder(r, store)
    thread = threading.Thread(target=rec.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: rec.metrics["reconnects"] >= 2, timeout=30)
        assert pending(r) == 1 and store.count() == 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert wait_until(lambda: pending(r) == 0, timeout=30)
    rec.request_stop()
    thread.join(30)
    assert [row["id"] for row in store.query()] == [event.id] and rec.metrics["stored"] == 1
    store.close()
