"""The archiver on a real Redis: what it stores is byte-identical to the streams, nothing is acked
before it is on disk, a redelivery is not stored twice, bad entries are dead-lettered, cameras
registered later are picked up, and the pose stage's trim keeps the frames not yet archived."""

from __future__ import annotations

import errno
import logging

import pytest
import redis

from shared import codec, keys
from shared.redisio import ensure_group, group_lag
from shared.reading import Entry
from shared.writing import Outcome
from tests.workers.archive.archive_helpers import (Clock, event, pending, publish_event, publish_frames,
                                                   publish_skeletons, register, settings, stream_fields)
from workers.archive.archiver import Archiver
from workers.archive.reader import ArchiveReader
from workers.archive.storage import LocalStorage

pytestmark = pytest.mark.integration


@pytest.fixture
def archive(tmp_path):
    storage = LocalStorage(tmp_path / "archive", writer=True)
    yield storage
    storage.close()


def _archiver(r, redis_url, storage, **kw) -> Archiver:
    return Archiver(r, storage, settings(redis_url, storage.root), block_ms=50, clock=Clock(), **kw)


def test_what_is_archived_is_byte_identical_to_the_streams(r, redis_url, archive):
    publish_frames(r, "cam-1", range(30), eos=True)
    publish_skeletons(r, "cam-1", range(30))
    publish_frames(r, "cam-2", range(5))
    events = [event("cam-1", 25), event("cam-1", 25, track=2), event("cam-2", 4)]
    for ev in events:
        publish_event(r, ev)
    publish_event(r, event("cam-1~job1", 25))  # a replay's event: never archived
    assert _archiver(r, redis_url, archive).run(burst=True) == 30 + 1 + 30 + 5 + 4
    reader = ArchiveReader(archive)
    assert reader.cameras() == ["cam-1", "cam-2"]
    frames = stream_fields(r, keys.frames_stream("cam-1"))[:30]  # the end of stream is not kept
    assert [rec.fields for rec in reader.read("cam-1", "frames")] == frames
    skeletons = stream_fields(r, keys.skeletons_stream("cam-1"))
    assert [rec.fields for rec in reader.read("cam-1", "skeletons")] == skeletons
    assert [codec.decode_frame(rec.fields) for rec in reader.read("cam-2", "frames")] == \
        [codec.decode_frame(f) for f in stream_fields(r, keys.frames_stream("cam-2"))]
    assert [codec.decode_event(rec.fields[b"event"]) for rec in reader.read("cam-1", "events")] == events[:2]
    assert [rec.seq for rec in reader.read("cam-2", "events")] == [4]
    for stream in (keys.frames_stream("cam-1"), keys.skeletons_stream("cam-1"), keys.EVENTS_STREAM):
        assert group_lag(r, stream, keys.ARCHIVE_GROUP) == 0, stream


class AckLost(Archiver):
    """Redis goes away after the records are on disk, before the acks: they are redelivered."""

    lost = 0

    def _ack(self, batch) -> None:
        if not self.lost:
            self.lost += 1
            raise redis.ConnectionError("connection lost before the acks")
        super()._ack(batch)


def test_a_redelivery_after_a_lost_ack_is_not_stored_twice(r, redis_url, archive):
    publish_frames(r, "cam-1", range(12))
    archiver = AckLost(r, archive, settings(redis_url, archive.root), block_ms=50, clock=Clock())
    archiver.run(burst=True)
    assert archiver.lost == 1 and archiver.metrics["duplicates"] == 12 and archiver.metrics["stored"] == 12
    assert [rec.seq for rec in ArchiveReader(archive).read("cam-1", "frames")] == list(range(12))
    assert pending(r, keys.frames_stream("cam-1")) == 0


class FailingSync(LocalStorage):
    def sync(self, name: str) -> None:
        raise OSError(errno.EIO, "Input/output error")


def test_nothing_is_acked_before_it_is_on_disk(r, redis_url, tmp_path, caplog):
    publish_frames(r, "cam-1", range(8))
    failing = FailingSync(tmp_path / "archive")
    with caplog.at_level(logging.ERROR, logger="workers.archive.archiver"):
        _archiver(r, redis_url, failing).run(burst=True)
    failing.close()
    assert pending(r, keys.frames_stream("cam-1")) == 8
    assert ArchiveReader(failing).count("cam-1", "frames") == 0
    assert "archive write failed: camera cam-1 frames" in caplog.text
    storage = LocalStorage(tmp_path / "archive", writer=True)  # a restart (same consumer): its backlog first
    assert _archiver(r, redis_url, storage).run(burst=True) == 8
    assert [rec.seq for rec in ArchiveReader(storage).read("cam-1", "frames")] == list(range(8))
    assert pending(r, keys.frames_stream("cam-1")) == 0
    storage.close()


def test_bad_entries_are_dead_lettered_and_the_rest_archived(r, redis_url, archive):
    publish_frames(r, "cam-1", range(3))
    stream = keys.frames_stream("cam-1")
    r.xadd(stream, {"v": 1, "kind": "frame", "camera": "cam-1", "seq": 3, "w": 8, "h": 8,
                    "jpeg": b"\xff\xd8xx"})
    r.xadd(stream, {**codec.encode_frame(codec.decode_frame(stream_fields(r, stream)[0])), "camera": "cam-9"})
    publish_frames(r, "cam-1", range(4, 6))
    r.xadd(keys.EVENTS_STREAM, {"event": b"not json"})
    r.xadd(keys.EVENTS_STREAM, {"something": b"else"})
    publish_event(r, event("cam-1", 5))
    archiver = _archiver(r, redis_url, archive)
    archiver.run(burst=True)
    reasons = [codec.decode_dead_letter(f).reason for f in stream_fields(r, keys.DEADLETTER_STREAM)]
    assert len(reasons) == 4 and archiver.metrics["dead"] == 4
    assert "undecodable frames entry: field 'ts' is missing" in reasons
    assert any("names camera 'cam-9'" in x for x in reasons)
    assert "undecodable events entry: event is not JSON: Expecting value: line 1 column 1 (char 0)" in reasons
    assert "undecodable events entry: field 'event' is missing" in reasons
    reader = ArchiveReader(archive)
    assert [rec.seq for rec in reader.read("cam-1", "frames")] == [0, 1, 2, 4, 5]
    assert reader.count("cam-1", "events") == 1
    assert pending(r, stream) == 0 and pending(r, keys.EVENTS_STREAM) == 0


def test_a_camera_registered_later_is_archived_from_its_start(r, redis_url, archive):
    monotonic = Clock(0.0)
    publish_frames(r, "cam-1", range(3))
    archiver = Archiver(r, archive, settings(redis_url, archive.root), block_ms=50, clock=Clock(),
                        monotonic=monotonic)
    while archiver.tick():
        pass
    publish_frames(r, "cam-2", range(4))
    register(r, "cam-3~job1")  # a replay camera: never kept
    archiver.tick()
    assert ArchiveReader(archive).cameras() == ["cam-1"]  # not re-listed yet
    monotonic.now += 10
    while archiver.tick():
        pass
    assert ArchiveReader(archive).count("cam-2", "frames") == 4
    assert keys.frames_stream("cam-3~job1") not in archiver.kept


def _worker(redis_url):
    from workers.pose.worker import PoseWorker

    worker = PoseWorker(settings(redis_url, "unused"), model=None, model_name="none", cameras=["cam-1"])
    worker.r = redis.Redis.from_url(redis_url)
    return worker


@pytest.mark.parametrize("archive_group, read, acked, first_kept", [
    (False, 0, 0, 8),  # no archiver: the pose stage trims up to its last acked frame
    (True, 0, 0, 0),   # an archiver that read nothing yet: nothing trimmed
    (True, 4, 0, 0),   # read, not yet on disk: kept
    (True, 4, 2, 2),   # two on disk: those before the first pending go
    (True, 4, 4, 3),   # all four on disk: trimmed like the pose group (its last one kept)
])
def test_the_pose_trim_keeps_frames_not_yet_archived(r, redis_url, archive_group, read, acked, first_kept):
    ids = publish_frames(r, "cam-1", range(10))
    stream = keys.frames_stream("cam-1")
    if archive_group:
        ensure_group(r, stream, keys.ARCHIVE_GROUP)
    if read:
        r.xreadgroup(keys.ARCHIVE_GROUP, "archive-1", {stream: ">"}, count=read)
        if acked:
            r.xack(stream, keys.ARCHIVE_GROUP, *ids[:acked])
    done = [Entry(stream, "cam-1", i, {}) for i in ids[:9]]  # the pose worker acked frames 0..8
    _worker(redis_url).after_write(Outcome(done=done))
    assert [i.decode() for i, _ in r.xrange(stream)] == ids[first_kept:]


def test_entries_trimmed_before_they_were_archived_are_not_left_pending(r, redis_url, archive):
    ids = publish_frames(r, "cam-1", range(6))
    stream = keys.frames_stream("cam-1")
    ensure_group(r, stream, keys.ARCHIVE_GROUP)
    r.xreadgroup(keys.ARCHIVE_GROUP, "archive-1", {stream: ">"}, count=4)  # read, then the archiver died
    r.xtrim(stream, minid=ids[2], approximate=False)  # the live stream's MAXLEN ~ went past two of them
    _archiver(r, redis_url, archive).run(burst=True)  # (XAUTOCLAIM, or the read, drops the trimmed ids)
    assert pending(r, stream) == 0
    assert [rec.seq for rec in ArchiveReader(archive).read("cam-1", "frames")] == [2, 3, 4, 5]
