"""The pose worker's threaded JPEG decoding, and IO binding in the pose models.

Decoding runs in a thread pool and overlaps the model calls; a batch must still come out
exactly as frame-by-frame processing gives it (each camera's order, the tracker's ids), and
a corrupt JPEG in the middle of a batch must be dead-lettered alone.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shared import codec, keys
from shared.redisio import ensure_group
from shared.schemas import EndOfStream, Frame, Skeletons
from shared.settings import load_settings
from tests.conftest import shared_path

CORRUPT = b"\xff\xd8\xff\xe0garbage"


def _jpegs(clip: str, n: int) -> list[bytes]:
    path = shared_path("data", "upfall", clip)
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/data holds the UP-Fall clips)")
    cap = cv2.VideoCapture(str(path))
    out = []
    for _ in range(n):
        ok, img = cap.read()
        assert ok
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    cap.release()
    return out


def _publish(r, camera: str, jpegs: list[bytes]) -> None:
    stream = keys.frames_stream(camera)
    ensure_group(r, stream, keys.POSE_GROUP)
    for seq, jpeg in enumerate(jpegs):
        r.xadd(stream, codec.encode_frame(Frame(camera, seq, seq / 18, 640, 480, jpeg)))
    r.xadd(stream, codec.encode_frame(EndOfStream(camera, len(jpegs))))
    r.hset(keys.CAMERAS_KEY, camera, "{}")


def _run(r, url, model, cameras, batch_per_camera):
    from workers.pose.worker import PoseWorker

    settings = load_settings(redis_url=url, mode="replay", replay_max_lag=10_000,
                             batch_per_camera=batch_per_camera, shared_dir=shared_path())
    worker = PoseWorker(settings, model, "movenet", cameras=cameras)
    assert worker.run(burst=True, exit_on_eos=True) == 0  # burst: a lost entry fails, never hangs
    out = {}
    for cam in cameras:
        msgs = [codec.decode_skeletons(f) for _, f in r.xrange(keys.skeletons_stream(cam))]
        assert isinstance(msgs[-1], EndOfStream)
        out[cam] = [(s.seq, [(p.track_id, p.keypoints.round(3).tolist()) for p in s.people])
                    for s in msgs if isinstance(s, Skeletons)]
    return worker, out


def test_a_batch_decoded_in_threads_gives_what_frame_by_frame_gives(r, redis_url, movenet):
    """Two cameras, one of them with a corrupt JPEG in the middle: one batch of 23 frames
    (decodes overlapping the model calls) against one frame per batch (nothing overlaps)."""
    fall = _jpegs("A01-S01-T1-C1.mp4", 60)[::5]  # 12 frames, 0.28 s apart: the person moves
    walk = _jpegs("A06-S01-T1-C1.mp4", 24)[::2]
    fall[5] = CORRUPT
    for tag in ("batch", "single"):
        _publish(r, f"a-{tag}", fall)
        _publish(r, f"b-{tag}", walk)
    batched, got = _run(r, redis_url, movenet, ["a-batch", "b-batch"], batch_per_camera=16)
    want = {}
    for cam in ("a-single", "b-single"):  # one camera, one frame per batch: nothing overlaps
        single, one = _run(r, redis_url, movenet, [cam], batch_per_camera=1)
        assert single.metrics["max_frames_per_batch"] == 1
        want.update(one)

    assert batched.metrics["max_frames_per_batch"] == 23
    assert [seq for seq, _ in got["a-batch"]] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert [seq for seq, _ in got["b-batch"]] == list(range(12))
    assert got["a-batch"] == want["a-single"] and got["b-batch"] == want["b-single"]
    assert any(people for _, people in got["a-batch"])  # the person is found: a real comparison
    dead = [codec.decode_dead_letter(f) for _, f in r.xrange(keys.DEADLETTER_STREAM)]
    assert [(d.stream, "cannot be decoded" in d.reason) for d in dead] == [
        (keys.frames_stream("a-batch"), True), (keys.frames_stream("a-single"), True)]


class _StopsEarly:
    """A model that takes only the first frame of a batch (a broken adapter)."""

    name = "movenet"

    def __init__(self, model) -> None:
        self.model = model

    def infer(self, images):
        return self.model.infer([next(iter(images))])


def test_a_model_that_leaves_frames_untaken_fails_the_batch_instead_of_losing_them(r, redis_url, movenet):
    _publish(r, "early", _jpegs("A01-S01-T1-C1.mp4", 3))
    worker, out = _run(r, redis_url, _StopsEarly(movenet), ["early"], batch_per_camera=8)
    assert [seq for seq, _ in out["early"]] == [0, 1, 2]  # bisected down to one frame per call
    assert worker.metrics["errors"] >= 1


@pytest.mark.parametrize("name, filename", [("movenet", "movenet_multipose.onnx"),
                                            ("mobilenet_thin", "mobilenet_thin.onnx")])
def test_io_binding_gives_the_plain_runs_outputs(name, filename):
    """IO binding (on by itself on CUDA only) forced on the CPU: the same outputs."""
    from workers.pose.netrun import SessionRunner
    from workers.pose.adapters import load_pose_model

    path = shared_path("models", filename)
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/models holds the pose models)")
    model = load_pose_model(name, path, providers=["CPUExecutionProvider"], threads=1)
    assert model.runner.io_binding is False  # the provider check: CPU runs plainly
    bound = SessionRunner(model.session, io_binding=True)
    img = cv2.imdecode(np.frombuffer(_jpegs("A01-S01-T1-C1.mp4", 1)[0], np.uint8), cv2.IMREAD_COLOR)
    x = model.preprocess(img)[0] if name == "movenet" else model.preprocess([img])
    want = model.runner(x)
    got = bound(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    assert np.abs(want).sum() > 0
