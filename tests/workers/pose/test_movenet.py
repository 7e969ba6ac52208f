"""MoveNet MultiPose adapter: letterbox arithmetic, and the real model on real images."""

from __future__ import annotations


import numpy as np
import pytest

from workers.pose import movenet
from workers.pose.adapters import load_pose_model
from tests.conftest import shared_path as shared_file
from tests.pose_data import close_fraction, coco_image


def confident(people):
    """The people the tracker may start a track from (weaker ones only extend tracks)."""
    return [p for p in people if p.score >= movenet.TRACK_HIGH]


@pytest.fixture(scope="module")
def model():
    return load_pose_model("movenet", shared_file("models", "movenet_multipose.onnx"), threads=2)


def test_letterbox_plans():
    box = movenet.plan_letterbox(320, 240)
    assert box.tensor == (256, 192) and box.resized == (256, 192) and box.scale == pytest.approx(0.8)
    box = movenet.plan_letterbox(640, 425)  # 256x170 -> padded to 256x192
    assert box.resized == (256, 170) and box.tensor == (256, 192)
    box = movenet.plan_letterbox(1000, 665, (256, 256))
    assert box.tensor == (256, 256) and box.resized == (256, 170)
    assert all(v % 32 == 0 for v in movenet.plan_letterbox(37, 1001).tensor)


def test_bad_input_sizes():
    with pytest.raises(ValueError, match="multiples of 32"):
        movenet.check_input_size((250, 250))
    with pytest.raises(ValueError):
        movenet.check_input_size(16)


def test_single_person_matches_ground_truth(model):
    img, (ann,) = coco_image("000000000785.jpg")
    (people,) = model.infer([img])
    assert len(confident(people)) == 1
    person = confident(people)[0]
    assert close_fraction(person, ann) >= 0.8
    x, y, w, h = ann["bbox"]
    x1, y1, x2, y2 = person.box
    assert abs(x1 - x) < 0.15 * w and abs(x2 - (x + w)) < 0.15 * w
    assert abs(y1 - y) < 0.15 * h and abs(y2 - (y + h)) < 0.15 * h
    assert all(p.score >= movenet.DEFAULT_PERSON_THRESHOLD for p in people)


def test_fixed_letterbox_gives_the_same_pose(model):
    """A square letterbox (aspect kept, padded) must undo to the same source pixels."""
    img, (ann,) = coco_image("000000000785.jpg")
    square = movenet.MoveNetModel(model.session, input_size=(256, 256))
    people = confident(square.infer([img])[0])
    assert len(people) == 1 and close_fraction(people[0], ann) >= 0.8
    (ref,) = confident(model.infer([img])[0])
    both = (people[0].keypoints[:, 2] > 0) & (ref.keypoints[:, 2] > 0)
    dist = np.hypot(*(people[0].keypoints[both, :2] - ref.keypoints[both, :2]).T)
    assert np.median(dist) < 0.03 * ann["bbox"][3]


def test_missing_joints_are_zero_and_neck_is_mid_shoulders(model):
    img, _ = coco_image("000000197388.jpg")
    (people,) = model.infer([img])
    assert people
    for p in people:
        kp = p.keypoints
        low = kp[:, 2] < movenet.DEFAULT_KEYPOINT_THRESHOLD
        assert (kp[low] == 0).all()
        if kp[2, 2] > 0 and kp[5, 2] > 0:  # both shoulders -> neck between them
            np.testing.assert_allclose(kp[1, :2], (kp[2, :2] + kp[5, :2]) / 2, atol=1e-3)
            assert kp[1, 2] == pytest.approx(min(kp[2, 2], kp[5, 2]))
        else:
            assert (kp[1] == 0).all()


def test_track_thresholds_follow_the_person_threshold(model):
    """People are decoded down to the floor, which is the tracker's low threshold; births need
    TRACK_HIGH (a person lying on the floor scores 0.05-0.2: tests/benchmarks/track_coverage.py)."""
    assert model.person_threshold == movenet.DEFAULT_PERSON_THRESHOLD < movenet.TRACK_HIGH
    assert model.track_thresholds == (movenet.TRACK_HIGH, movenet.DEFAULT_PERSON_THRESHOLD)
    strict = movenet.MoveNetModel(model.session, person_threshold=0.3)
    assert strict.track_thresholds == (0.3, 0.3)


@pytest.mark.parametrize("threshold", [0.05, 0.2, 0.5])
def test_people_are_decoded_down_to_the_person_threshold(threshold):
    rows = np.zeros((movenet.MAX_PEOPLE, movenet.ROW), np.float32)
    rows[:, 51:55] = [0.1, 0.1, 0.9, 0.5]  # ymin, xmin, ymax, xmax
    rows[:, 55] = [0.6, 0.3, 0.2, 0.1, 0.06, 0.04]
    box = movenet.plan_letterbox(320, 240)
    people = movenet.decode_rows(rows, box, 320, 240, person_threshold=threshold)
    assert [p.score for p in people] == [float(s) for s in rows[:, 55] if s >= threshold]
