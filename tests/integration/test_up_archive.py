"""`actionstream up --archive DIR`: the archiver runs beside the pipeline and `up` stops it only
once it has stored the whole run, so the archive holds every frame and skeleton of the clip."""

from __future__ import annotations

import numpy as np
import pytest

from producer.producer import Producer
from shared import codec, keys
from shared.settings import load_settings, make_camera
from tests.conftest import shared_path, SHORT_CLIP_RULE
from tests.integration.test_up import _up
from workers.archive.reader import ArchiveReader
from workers.archive.storage import LocalStorage
from shared.supervisor import ProcSpec, child_env
from workers.console.up import _drain_archive, _reset, _start_archive

pytestmark = pytest.mark.integration

CAMERA = "urfd-16"


def _clip_frames(video) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def test_up_archive_keeps_every_frame_skeleton_and_event_of_the_run(tmp_path):
    import cv2

    video = shared_path("data", "urfd", "fall-16-cam0.mp4")  # the shortest UR Fall clip: 55 frames
    clip = [image[:, 320:640] for image in _clip_frames(video)]  # its right-hand view (--crop)
    archive, ev = tmp_path / "archive", tmp_path / "ev.jsonl"
    env = {"ACTIONSTREAM_SHARED_DIR": str(shared_path()), "ACTIONSTREAM_DATA_DIR": str(tmp_path / "data"),
           **SHORT_CLIP_RULE}
    proc = _up("--source", str(video), "--camera", CAMERA, "--crop", "320,0,320,240", "--no-web",
               "--no-history", "--events-out", str(ev), "--archive", str(archive), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"archive: {archive}" in proc.stdout

    reader = ArchiveReader(LocalStorage(archive))
    assert reader.cameras() == [CAMERA]
    assert reader.count(CAMERA, "frames") == reader.count(CAMERA, "skeletons") == len(clip) > 50
    assert [rec.seq for rec in reader.read(CAMERA, "skeletons")] == list(range(len(clip)))
    records = list(reader.read(CAMERA, "frames"))
    assert [rec.seq for rec in records] == list(range(len(clip)))
    for rec in records:
        frame = codec.decode_frame(rec.fields)
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == (frame.height, frame.width) == clip[0].shape[:2] == (240, 320)
        # the clip's own frame at that seq (JPEG q90 of it), not another one
        diff = np.abs(image.astype(np.int16) - clip[frame.seq].astype(np.int16)).mean()
        assert diff < 6, (frame.seq, diff)
    run_events = {codec.decode_event(line).id for line in ev.read_text().splitlines()}
    archived = {codec.decode_event(rec.fields[b"event"]).id for rec in reader.read(CAMERA, "events")}
    assert archived == run_events and run_events, proc.stderr[-2000:]


@pytest.mark.parametrize("other_archiver, error", [
    ("on the directory", "another archiver writes to"),  # it holds the directory's lock
    ("on the redis", "an archiver already runs on redis://"),  # its heartbeat: it archives the run itself
])
def test_up_archive_beside_another_archiver_is_refused(tmp_path, redis_url, r, other_archiver, error):
    import time

    from shared import heartbeat

    video = shared_path("data", "urfd", "fall-16-cam0.mp4")
    held = LocalStorage(tmp_path / "held", writer=True)
    if other_archiver == "on the redis":
        heartbeat.beat(r, "archive-other", keys.ARCHIVE_GROUP, {}, [], time.time(), 30)
    directory = tmp_path / ("held" if other_archiver == "on the directory" else "archive")
    try:
        proc = _up("--source", str(video), "--pose-only", "--no-web", "--no-history", "--redis", redis_url,
                   "--archive", str(directory),
                   env={"ACTIONSTREAM_SHARED_DIR": str(shared_path()), **SHORT_CLIP_RULE},
                   timeout=60)
    finally:
        held.close()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert error in proc.stderr
    assert [p.name for p in directory.iterdir()] == [".writer.lock"]  # nothing ran
    assert not r.exists(keys.frames_stream("cam-1"))


@pytest.mark.parametrize("followed, drained, kept", [
    (True, True, 20),  # the archiver catches up: the drain returns once all 20 frames are stored
    (False, False, 0),  # it never follows the camera (unregistered): no progress, the drain gives up
])
def test_the_drain_waits_until_the_archive_has_every_entry(tmp_path, redis_url, r, followed, drained, kept):
    camera = make_camera(id="drain-cam", source=str(shared_path("data", "urfd", "fall-16-cam0.mp4")))
    _reset(r, [camera], pose_only=True, archive=True)
    settings = load_settings(redis_url=redis_url, mode="replay", replay_max_lag=10_000)
    Producer(settings, camera).run(max_frames=20)  # 20 frames and the end of stream, nobody reading
    if not followed:
        r.hdel(keys.CAMERAS_KEY, camera.id)
    directory = tmp_path / "archive"
    archive = _start_archive(directory, ProcSpec("archive", ["archive", "--dir", str(directory)]),
                             child_env(redis_url, {}))
    try:
        assert _drain_archive(r, archive, [camera], stall_s=2.0) is drained
    finally:
        archive.stop()
    assert ArchiveReader(LocalStorage(directory)).count(camera.id, "frames") == kept
