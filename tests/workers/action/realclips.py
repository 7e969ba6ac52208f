"""Real skeletons for the action-stage tests: the real MoveNet and the pose stage's tracker
on a real URFD clip (its RGB half), as the pose worker makes them, cached per process.

``urfd_skeletons(name)``: every frame of ``../shared/data/urfd/<name>-cam0.mp4`` as
:class:`Skeletons` of camera ``cam`` (seq = frame index, ts = seq / 30), with the clip's
per-frame labels (-1 upright, 0 falling, 1 lying). Skips when ../shared is absent.
"""

from __future__ import annotations

import csv
import functools

import cv2
import numpy as np

from shared.schemas import Skeletons
from tests.conftest import shared_path

CROP = (320, 0, 320, 240)  # x, y, w, h: the RGB half of a URFD frame
FPS = 30.0


@functools.lru_cache(maxsize=None)
def _pose_model():
    from workers.pose.adapters import load_pose_model

    return load_pose_model("movenet", shared_path("models", "movenet_multipose.onnx"),
                           providers=["CPUExecutionProvider"], threads=2)


@functools.lru_cache(maxsize=None)
def urfd_skeletons(name: str = "fall-01",
                   camera: str = "cam") -> tuple[tuple[Skeletons, ...], tuple[int, ...]]:
    """(skeletons per frame, label per frame) of a URFD clip; see the module doc."""
    from workers.pose.tracker import Tracker

    video = shared_path("data", "urfd", f"{name}-cam0.mp4")
    with open(shared_path("data", "urfd", "labels.csv")) as fh:
        labels = {int(row[1]) - 1: int(row[2]) for row in csv.reader(fh) if row[0] == name}
    cap = cv2.VideoCapture(str(video))
    model, tracker, out = _pose_model(), Tracker(), []
    x, y, w, h = CROP
    while True:
        ok, image = cap.read()
        if not ok:
            break
        image = np.ascontiguousarray(image[y:y + h, x:x + w])
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])  # as the producer
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        (people,) = model.infer([image])
        seq = len(out)
        out.append(Skeletons(camera, seq, seq / FPS, w, h, tuple(tracker.update(people).people),
                             "movenet"))
    cap.release()
    assert out, f"{video} gave no frames"
    return tuple(out), tuple(labels.get(i, -1) for i in range(len(out)))


def shipped_classifier():
    """The shipped fall model (workers/action/models/fall.onnx) on CPU."""
    from workers.inference.sessions import default_action_model
    from workers.action.classifier import ActionClassifier

    return ActionClassifier(default_action_model(), providers=["CPUExecutionProvider"], threads=2)
