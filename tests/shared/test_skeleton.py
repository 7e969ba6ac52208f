import numpy as np
import pytest

from shared.skeleton import (COCO_17, OPENPOSE_18, Person, box_from_keypoints, coco17_to_openpose18,
                             get_layout, openpose18_to_coco17)


def test_coco_to_openpose_inserts_the_neck_between_the_shoulders():
    kp = np.zeros((17, 3), np.float32)
    kp[5] = (10, 20, 0.9)  # left shoulder
    kp[6] = (30, 24, 0.6)  # right shoulder
    kp[0] = (20, 5, 0.8)
    op = coco17_to_openpose18(kp)
    np.testing.assert_allclose(op[1], (20, 22, 0.6))
    np.testing.assert_allclose(op[OPENPOSE_18.joints.index("l_shoulder")], kp[5])
    np.testing.assert_allclose(op[OPENPOSE_18.joints.index("r_shoulder")], kp[6])
    np.testing.assert_allclose(op[0], kp[0])


def test_missing_shoulder_gives_no_neck():
    kp = np.zeros((17, 3), np.float32)
    kp[5] = (10, 20, 0.9)
    assert (coco17_to_openpose18(kp)[1] == 0).all()


def test_round_trip_and_batch_shapes():
    kp = np.random.default_rng(0).random((4, 17, 3)).astype(np.float32)
    np.testing.assert_array_equal(openpose18_to_coco17(coco17_to_openpose18(kp)), kp)


@pytest.mark.parametrize("shape, error", [((18, 3), "17, 3"), ((17, 2), "17, 3")])
def test_conversion_names_the_expected_shape(shape, error):
    with pytest.raises(ValueError, match=error):
        coco17_to_openpose18(np.zeros(shape))


@pytest.mark.parametrize("kp, box, score, error", [
    (np.zeros((17, 3)), np.zeros(4), 1.0, r"\(18, 3\)"),
    (np.full((18, 3), np.nan), np.zeros(4), 1.0, "NaN"),
    (np.zeros((18, 3)), np.zeros(3), 1.0, "box"),
    (np.zeros((18, 3)), np.zeros(4), float("nan"), "score"),
])
def test_person_rejects_bad_input(kp, box, score, error):
    with pytest.raises(ValueError, match=error):
        Person(kp, box, score)


def test_box_from_keypoints_ignores_missing_joints():
    kp = np.zeros((18, 3), np.float32)
    kp[0] = (5, 6, 1)
    kp[3] = (50, 60, 1)
    np.testing.assert_allclose(box_from_keypoints(kp), (5, 6, 50, 60))


def test_layouts_are_consistent():
    for name in ("openpose", "coco", "ntu-rgb+d"):
        layout = get_layout(name)
        assert all(0 <= a < layout.num_joints and 0 <= b < layout.num_joints for a, b in layout.edges)
    assert COCO_17.num_joints == 17 and OPENPOSE_18.num_joints == 18
    with pytest.raises(ValueError, match="unknown skeleton layout"):
        get_layout("smpl")
