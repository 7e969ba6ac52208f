"""pose eval: COCO keypoint AP with pycocotools on the pose_gt sets (issue 4, item 2)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from shared.skeleton import Person, box_from_keypoints, coco17_to_openpose18
from tests.conftest import shared_path

pytest.importorskip("pycocotools", reason="pose eval needs the 'eval' extra (pycocotools)")

from workers.offline.posetrain import evaluate as ev  # noqa: E402
from workers.offline.posetrain.posecli import pose_main  # noqa: E402


def _gt_detections(gt: ev.GroundTruth, noise: float = 0.0, seed: int = 0) -> list[dict]:
    """The labelled GT people as detections (score 1), optionally moved by ``noise`` x box size."""
    rng = np.random.default_rng(seed)
    dets = []
    for ann in gt.coco["annotations"]:
        if ann["iscrowd"] or ann["num_keypoints"] == 0:
            continue
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3).copy()
        kp[:, :2] += noise * max(ann["bbox"][2], ann["bbox"][3]) * rng.standard_normal((len(kp), 2))
        dets.append({"image_id": ann["image_id"], "category_id": 1, "score": 1.0,
                     "keypoints": kp.ravel().tolist()})
    return dets


@pytest.fixture(scope="module")
def gt_root():
    return shared_path("data", "pose_gt")


@pytest.mark.parametrize("name", list(ev.DATASETS))
def test_ground_truth_as_detections_gives_ap_one(gt_root, name):
    gt = ev.load_ground_truth(name, gt_root)
    assert gt.num_people > 0 and all(p.is_file() for p in gt.image_paths.values())
    ap, ap50 = ev.keypoint_ap(gt.coco, _gt_detections(gt), gt.spec.sigmas)
    assert ap == pytest.approx(1.0) and ap50 == pytest.approx(1.0)


def test_perturbed_ground_truth_lowers_ap(gt_root):
    gt = ev.load_ground_truth("coco", gt_root)
    ap_small, _ = ev.keypoint_ap(gt.coco, _gt_detections(gt, 0.02), gt.spec.sigmas)
    ap_large, _ = ev.keypoint_ap(gt.coco, _gt_detections(gt, 0.10), gt.spec.sigmas)
    assert 0.0 <= ap_large < ap_small < 1.0


def test_person_round_trip_through_the_mapping(gt_root):
    """GT -> Person (OpenPose-18) -> detections_for: the mapping loses nothing COCO scores."""
    gt = ev.load_ground_truth("coco", gt_root)
    dets = []
    for ann in gt.coco["annotations"]:
        if ann["num_keypoints"]:
            kp = coco17_to_openpose18(np.asarray(ann["keypoints"], np.float32).reshape(17, 3))
            dets += ev.detections_for(gt, ann["image_id"], [Person(kp, box_from_keypoints(kp), 0.9)])
    assert ev.keypoint_ap(gt.coco, dets, gt.spec.sigmas)[0] == pytest.approx(1.0)


def test_crowdpose_mapping_and_unlabelled_joints(gt_root):
    kp = np.zeros((18, 3), np.float32)
    kp[1] = (10, 20, 0.5)  # neck
    kp[5] = (30, 40, 0.7)  # l_shoulder
    out = ev.person_to_crowdpose14(Person(kp, box_from_keypoints(kp), 0.5))
    assert out.shape == (14, 3)
    np.testing.assert_allclose(out[0], (30, 40, 0.7))
    np.testing.assert_allclose(out[13], (10, 20, 0.5))
    assert not out[12].any()  # head-top: no model has it
    gt = ev.load_ground_truth("crowdpose", gt_root)
    assert all(a["keypoints"][12 * 3 + 2] == 0 for a in gt.coco["annotations"])
    pt = ev.load_ground_truth("posetrack18", gt_root)
    assert all(a["keypoints"][3 + 2] == 0 and "area" in a for a in pt.coco["annotations"])


def test_no_detections_and_extra_fields_do_not_break(gt_root):
    gt = ev.load_ground_truth("ochuman", gt_root)
    assert ev.keypoint_ap(gt.coco, [], gt.spec.sigmas) == (0.0, 0.0)
    coco = copy.deepcopy(gt.coco)
    assert ev.keypoint_ap(coco, _gt_detections(gt), gt.spec.sigmas)[0] == pytest.approx(1.0)


def test_movenet_on_coco_gives_ap_in_unit_interval(gt_root):
    from workers.pose.adapters import load_pose_model

    model = load_pose_model("movenet", shared_path("models", "movenet_multipose.onnx"), threads=1)
    row = ev.evaluate_model("movenet", model, ev.load_ground_truth("coco", gt_root))
    assert 0.0 < row.ap <= 1.0 and 0.0 < row.ap50 <= 1.0
    assert row.images == 4 and row.detections > 0 and row.wall_ms > 0
    table = ev.format_table([row])
    assert "| movenet | coco | 4 |" in table and "Few images" in table


def test_cli_eval_prints_the_table(gt_root, capsys):
    shared_path("models", "movenet_multipose.onnx")
    assert pose_main(["eval", "--models", "movenet", "--datasets", "crowdpose", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| movenet | crowdpose | 2 |" in out
