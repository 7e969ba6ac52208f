"""`actionstream up` end to end, as a user runs it: separate processes, a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from shared import codec
from tests.conftest import ROOT, shared_path

pytestmark = pytest.mark.integration


def _up(*args, env=None, timeout=600):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "workers", "up", "--no-progress", *args],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def test_up_on_a_fall_clip(tmp_path, seeded_action_model):
    video = shared_path("data", "urfd", "fall-01-cam0.mp4")
    ev, sk, ann = tmp_path / "ev.jsonl", tmp_path / "sk", tmp_path / "annotated.mp4"
    env = {"ACTIONSTREAM_ALERT_LABELS": '["falling", "lying", "upright"]',
           "ACTIONSTREAM_ALERT_THRESHOLD": "0", "ACTIONSTREAM_ALERT_CONSECUTIVE": "1",
           "ACTIONSTREAM_SHARED_DIR": str(shared_path())}
    proc = _up("--source", str(video), "--camera", "urfd-01", "--crop", "320,0,320,240",
               "--action-model", str(seeded_action_model), "--events-out", str(ev),
               "--skeletons-out", str(sk), "--annotate-out", str(ann), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    doc = json.loads((sk / "urfd-01.json").read_text())
    import cv2

    cap = cv2.VideoCapture(str(video))
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert [d["frame_index"] for d in doc["data"]] == list(range(n_frames))  # 0-based, none dropped
    ids = Counter(s["track_id"] for d in doc["data"] for s in d["skeleton"])
    with_people = sum(1 for d in doc["data"] if d["skeleton"])
    main_id, main_count = ids.most_common(1)[0]
    # one person under one id in most frames (MoveNet loses her lying half out of view at the end)
    assert main_count >= 0.65 * n_frames, (ids, n_frames)
    assert main_count >= 0.9 * with_people, ids  # the track is not split
    pose = doc["data"][n_frames // 2]["skeleton"][0]
    assert len(pose["pose"]) == 36 and len(pose["score"]) == 18
    assert all(0.0 <= v <= 1.0 for v in pose["pose"])

    events = [codec.decode_event(line) for line in ev.read_text().splitlines()]
    assert events, proc.stderr[-2000:]
    assert len({e.id for e in events}) == len(events)
    for e in events:
        assert e.camera == "urfd-01" and 0 <= e.frame_start <= e.frame_end < n_frames
        assert e.model and e.emitted_at > 0 and e.label_index in (0, 1, 2)
    assert ann.stat().st_size > 10_000
    cap = cv2.VideoCapture(str(ann))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == n_frames
    cap.release()


@pytest.mark.parametrize("args, message", [
    (["--source", "/nonexistent/video.mp4"], "does not exist"),
    (["--source", "x.mp4", "--crop", "1,2,3"], "--crop must be X,Y,W,H"),
    (["--source", "a.mp4", "--camera", "a", "--camera", "b"], "2 --camera ids for 1 --source"),
    ([], "nothing to run"),
])
def test_up_bad_input_is_a_clear_error(args, message):
    proc = _up(*args, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_up_with_a_missing_action_model(tmp_path):
    video = shared_path("data", "urfd", "fall-01-cam0.mp4")
    proc = _up("--source", str(video), "--action-model", str(tmp_path / "none.onnx"), timeout=60)
    assert proc.returncode == 2 and "none.onnx does not exist" in proc.stderr


def test_a_pose_worker_given_the_wrong_model_says_so():
    movenet = shared_path("models", "movenet_multipose.onnx")
    proc = subprocess.run([sys.executable, "-m", "workers", "pose-worker",
                           "--pose-model", "mobilenet_thin",
                           "--model-path", str(movenet), "--burst"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "is not a mobilenet_thin model" in proc.stderr


def test_up_records_the_runs_events_in_the_event_history(tmp_path):
    """The run's events outlive its embedded Redis: `up` runs the history recorder, and the
    events (with their snapshots) are in the SQLite history when it has ended."""
    import cv2

    from shared.settings import load_settings
    from workers.history.store import EventStore

    video = shared_path("data", "urfd", "fall-05-cam0.mp4")
    data, ev = tmp_path / "data", tmp_path / "ev.jsonl"
    env = {"ACTIONSTREAM_SHARED_DIR": str(shared_path()), "ACTIONSTREAM_DATA_DIR": str(data)}
    proc = _up("--source", str(video), "--camera", "urfd-fall-05", "--crop", "320,0,320,240",
               "--no-web", "--events-out", str(ev), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "event history: sqlite:///" in proc.stdout
    run_ids = {codec.decode_event(line).id for line in ev.read_text().splitlines()}
    assert run_ids, "the held-out fall raised no event"

    store = EventStore.from_settings(load_settings(data_dir=data))
    rows = store.query(camera="urfd-fall-05")
    assert {row["id"] for row in rows} == run_ids
    for row in rows:
        image = cv2.imread(str(store.snapshot_path(row["id"])))
        assert image is not None and image.shape[:2] == (240, 320), row

    bare = _up("--source", str(video), "--camera", "urfd-fall-05", "--crop", "320,0,320,240",
               "--no-web", "--no-history", env=dict(env, ACTIONSTREAM_DATA_DIR=str(tmp_path / "none")))
    assert bare.returncode == 0, bare.stderr[-3000:]
    assert not (tmp_path / "none").exists()
