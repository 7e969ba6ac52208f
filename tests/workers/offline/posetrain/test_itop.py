"""ITOP -> COCO converter on synthetic HDF5 files in ITOP's exact layout (issue 4, item 3)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="the ITOP converter needs h5py")

from workers.offline.posetrain.finetune import itop  # noqa: E402
from workers.offline.posetrain.posecli import pose_main  # noqa: E402

# a standing person seen from above, ITOP joint order (x, y) in a 320x240 image
BASE = np.array([[160, 60], [160, 80], [140, 85], [180, 85], [130, 105], [190, 105], [125, 125],
                 [195, 125], [160, 110], [148, 135], [172, 135], [146, 165], [174, 165], [145, 195],
                 [175, 195]])


def _write_itop(tmp_path, n=4):
    """Frames: 0 ok, 1 is_valid=0, 2 a negative coordinate, 3 the right foot beyond the image."""
    coords = np.repeat(BASE[None], n, axis=0).astype(np.int64)
    coords[2, 7] = (-1, 120)
    coords[3, 13] = (330, 230)
    visible = np.ones((n, 15), np.int16)
    visible[0, 6] = 0
    valid = np.array([1, 0, 1, 1], np.uint8)[:n]
    ids = np.array([f"00_{i:05d}".encode() for i in range(n)], dtype="S8")
    labels = tmp_path / "ITOP_top_test_labels.h5"
    with h5py.File(labels, "w") as f:
        f["id"], f["image_coordinates"], f["visible_joints"], f["is_valid"] = ids, coords, visible, valid
        f["real_world_coordinates"] = np.zeros((n, 15, 3), np.float32)
    depth = np.full((n, 240, 320), 3.0, np.float16)
    depth[:, :, :40] = 0.0  # no sensor reading at the left border
    depth[:, 50:200, 120:200] = 1.5  # the person, nearer to the camera
    depth_path = tmp_path / "ITOP_top_test_depth_map.h5"
    with h5py.File(depth_path, "w") as f:
        f["id"], f["data"] = ids, depth
    return labels, depth_path


def test_convert_maps_joints_flags_and_skips(tmp_path):
    labels, depth = _write_itop(tmp_path)
    out = itop.convert(labels, tmp_path / "out", depth)
    coco = json.loads(out.read_text())
    assert [i["itop_id"] for i in coco["images"]] == ["00_00000", "00_00003"]
    assert coco["info"]["skipped"] == {"invalid": 1, "negative": 1}
    kp = np.asarray(coco["annotations"][0]["keypoints"]).reshape(17, 3)
    np.testing.assert_array_equal(kp[0], (160, 60, 1))  # head -> nose
    np.testing.assert_array_equal(kp[5], (180, 85, 1))  # L shoulder
    np.testing.assert_array_equal(kp[6], (140, 85, 1))  # R shoulder
    np.testing.assert_array_equal(kp[10], (125, 125, 1))  # R hand -> R wrist (coordinates exist)
    np.testing.assert_array_equal(kp[16], (145, 195, 1))  # R foot -> R ankle
    assert (kp[1:5, 2] == 2).all() and not kp[1:5, :2].any()  # eyes / ears: ITOP lacks them
    ann = coco["annotations"][0]
    assert ann["neck"] == [160, 80, 1] and ann["center"] == [160, 110]
    assert ann["itop_visible"][6] == 0 and set(ann["absent_keypoints"]) == set(itop.ABSENT)
    x, y, w, h = ann["bbox"]
    assert x < 125 and y < 60 and x + w > 195 and y + h > 195
    kp3 = np.asarray(coco["annotations"][1]["keypoints"]).reshape(17, 3)
    np.testing.assert_array_equal(kp3[16], (0, 0, 0))  # R foot outside the image: no coordinates
    img = cv2.imread(str(tmp_path / "out" / coco["images"][0]["file_name"]))
    mask = cv2.imread(str(tmp_path / "out" / coco["images"][0]["mask_file"]), cv2.IMREAD_GRAYSCALE)
    assert img.shape == (240, 320, 3) and img[100, 160, 0] > img[10, 300, 0]  # nearer = brighter
    assert (mask[:, :40] == 0).all() and (mask[:, 40:] == 255).all()


def test_converted_file_evaluates_with_absent_joints_unlabelled(tmp_path):
    pytest.importorskip("pycocotools")
    from workers.offline.posetrain import evaluate as ev

    labels, depth = _write_itop(tmp_path)
    gt = ev.load_coco_file(itop.convert(labels, tmp_path / "out", depth))
    ann = gt.coco["annotations"][0]
    assert ann["num_keypoints"] == 13 and ann["keypoints"][1 * 3 + 2] == 0
    dets = [{"image_id": a["image_id"], "category_id": 1, "score": 1.0, "keypoints": a["keypoints"]}
            for a in gt.coco["annotations"]]
    assert ev.keypoint_ap(gt.coco, dets, gt.spec.sigmas)[0] == pytest.approx(1.0)


def test_mix_coco_adds_images_at_the_ratio(tmp_path):
    labels, depth = _write_itop(tmp_path)
    out = itop.convert(labels, tmp_path / "out", depth)
    coco_json = tmp_path / "coco.json"
    kp = [10, 10, 2] * 17
    coco_json.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in (7, 8, 9, 10)],
        "annotations": [{"id": i, "image_id": i, "keypoints": kp, "num_keypoints": 17 if i != 10 else 0,
                         "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0, "category_id": 1}
                        for i in (7, 8, 9, 10)]}))
    mixed = json.loads(itop.mix_coco(out, coco_json, tmp_path, 1.5, tmp_path / "mix.json").read_text())
    added = [i for i in mixed["images"] if i.get("source") == "coco"]
    assert len(added) == 3 and len({i["id"] for i in mixed["images"]}) == 5
    assert all(i["file_name"].startswith("/") for i in added)
    assert mixed["info"]["coco_mix"]["images"] == 3
    assert all("absent_keypoints" not in a for a in mixed["annotations"] if a["image_id"] > 2)


def test_cli_itop2coco(tmp_path, capsys):
    labels, depth = _write_itop(tmp_path)
    assert pose_main(["itop2coco", str(labels), "--depth", str(depth), "--out", str(tmp_path / "o")]) == 0
    assert "2 images, 2 people" in capsys.readouterr().out
    assert (tmp_path / "o" / "masks" / "00_00000.png").is_file()
