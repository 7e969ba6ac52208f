"""What every pose model must do on real images, whatever its network (one test, both models)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import shared_path
from tests.pose_data import close_fraction, coco_image, urfd_rgb
from workers.pose.adapters import load_pose_model

FILES = {"movenet": "movenet_multipose.onnx", "mobilenet_thin": "mobilenet_thin.onnx"}


@pytest.fixture(scope="module", params=sorted(FILES))
def model(request):
    return load_pose_model(request.param, shared_path("models", FILES[request.param]), threads=2)


def test_multi_person_count_and_accuracy(model):
    img, anns = coco_image("000000196141.jpg")
    (people,) = model.infer([img])
    assert abs(len(people) - len(anns)) <= 1
    good = [max(close_fraction(p, a) for p in people) >= 0.6 for a in anns]
    assert sum(good) >= len(anns) - 1


def test_urfd_frame_has_one_person(model):
    (people,) = model.infer([urfd_rgb(30)])
    assert len(people) == 1
    kp = people[0].keypoints
    seen = kp[:, 2] > 0
    assert seen.sum() >= 14 and kp[seen, 0].max() < 320 and kp[seen, 1].max() < 240


def test_batch_equals_single_calls(model):
    frames = [coco_image("000000000785.jpg")[0], urfd_rgb(30), coco_image("000000040083.jpg")[0]]
    batch = model.infer(frames)
    assert len(batch) == 3
    for frame, got in zip(frames, batch):
        (want,) = model.infer([frame])
        assert len(got) == len(want) > 0
        for a, b in zip(got, want):
            np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-4)


def test_black_frame_and_empty_batch(model):
    assert model.infer([np.zeros((240, 320, 3), np.uint8)]) == [[]]
    assert model.infer([]) == []
