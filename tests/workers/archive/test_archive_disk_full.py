"""A full disk (a real, small tmpfs under one camera's archive folder) is reported, that camera's
entries stay pending, the other cameras are archived, the live pipeline (a real pose worker)
goes on without losing a frame the archive still needs, and archiving resumes once there is room."""

from __future__ import annotations

import logging
import shutil
import subprocess

import pytest
from prometheus_client import generate_latest

from shared import codec, keys, metrics
from shared.modelpaths import resolve_pose_model
from shared.redisio import group_lag
from shared.schemas import Skeletons
from tests.conftest import shared_path
from tests.workers.archive.archive_helpers import (Clock, event, pending, publish_event, publish_frames,
                                                   settings, stream_fields)
from workers.archive.archiver import Archiver
from workers.archive.reader import ArchiveReader
from workers.archive.storage import LocalStorage

pytestmark = pytest.mark.integration
FRAMES = 30  # about 4.4 kB each, in segments of 10 (1 s): the small disk holds the first only


def _mount(args: list[str]) -> str:
    if shutil.which("mount") is None:
        return "no mount command"
    res = subprocess.run(args, capture_output=True, text=True)
    return res.stderr.strip() or f"exit {res.returncode}" if res.returncode else ""


@pytest.fixture
def small_disk(tmp_path):
    """``<archive>/cam-1`` on a 64 kB tmpfs (skipped where mounting is not permitted)."""
    mnt = tmp_path / "archive" / "cam-1"
    mnt.mkdir(parents=True)
    problem = _mount(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)])
    if problem:
        pytest.skip(f"cannot mount a small tmpfs to fill ({problem}): the full-disk test needs root")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.fixture(scope="module")
def pose_model():
    from shared.settings import load_settings
    from workers.pose.adapters import load_pose_model

    path = resolve_pose_model("movenet", load_settings(shared_dir=shared_path()))
    return load_pose_model("movenet", path, threads=1)


def _pose_run(redis_url, archive_root, model) -> None:
    from workers.pose.worker import PoseWorker

    s = settings(redis_url, archive_root, mode="replay", replay_max_lag=10_000, snapshot_frames=0)
    PoseWorker(s, model, "movenet", cameras=["cam-1"]).run(burst=True)


def test_a_full_disk_is_reported_and_the_pipeline_goes_on(r, redis_url, small_disk, pose_model, caplog):
    ids = publish_frames(r, "cam-1", range(FRAMES))
    originals = stream_fields(r, keys.frames_stream("cam-1"))
    publish_frames(r, "cam-2", range(10))
    publish_event(r, event("cam-1", 20))
    publish_event(r, event("cam-2", 9))
    storage = LocalStorage(small_disk.parent, writer=True)
    monotonic = Clock(0.0)
    archiver = Archiver(r, storage, settings(redis_url, storage.root, segment_s=1), block_ms=50,
                        clock=Clock(), monotonic=monotonic)
    with caplog.at_level(logging.INFO, logger="workers.archive.archiver"):
        archiver.run(burst=True)
        errors = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.ERROR]
        assert len(errors) == 1, errors  # one clear line, not one per retry
        assert errors[0].startswith("archive disk full: camera cam-1") and str(storage.root) in errors[0]
        assert archiver.metrics["disk_full"] == ["cam-1"]
        stream = keys.frames_stream("cam-1")
        waiting = pending(r, stream)
        assert 0 < waiting < FRAMES, waiting
        reader = ArchiveReader(storage)
        assert reader.count("cam-2", "frames") == 10 and reader.count("cam-2", "events") == 1  # others go on
        assert reader.count("cam-1", "frames") == FRAMES - waiting  # what fitted; the rest waits in Redis

        _pose_run(redis_url, storage.root, pose_model)  # the live path: not held up by the archive
        skeletons = [codec.decode_skeletons(f) for f in stream_fields(r, keys.skeletons_stream("cam-1"))]
        assert [s.seq for s in skeletons if isinstance(s, Skeletons)] == list(range(FRAMES))
        assert group_lag(r, stream, keys.POSE_GROUP) == 0
        kept = [i.decode() for i, _ in r.xrange(stream)]
        assert kept == ids[FRAMES - waiting:]  # trimmed up to the archive's first pending frame, no further

        assert not _mount(["mount", "-o", "remount,size=16m", str(small_disk)])  # room again
        monotonic.now += 60  # past the retry time
        while archiver.tick():
            pass
    assert [rec.fields for rec in reader.read("cam-1", "frames")] == originals
    samples = metrics.parse(generate_latest().decode())  # measured before the retry read them
    assert samples['actionstream_stream_lag_entries{camera="cam-1",stage="archive"}'] == waiting
    assert reader.count("cam-1", "events") == 1
    assert pending(r, stream) == 0 and pending(r, keys.EVENTS_STREAM) == 0
    assert "camera cam-1 frames written to" in caplog.text
    storage.close()
