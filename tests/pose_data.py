"""Real data the pose tests share: COCO ground truth, a URFD frame, a closeness score."""

from __future__ import annotations

import json

import cv2
import numpy as np

from shared.skeleton import openpose18_to_coco17
from tests.conftest import shared_path as shared_file


def coco_image(name: str):
    """(BGR image, GT annotations with keypoints) of a COCO test image."""
    gt = json.loads(shared_file("data", "pose_gt", "coco", "test_coco.json").read_text())
    image_id = next(im["id"] for im in gt["images"] if im["file_name"] == name)
    anns = [a for a in gt["annotations"] if a["image_id"] == image_id and a["num_keypoints"] > 0]
    return cv2.imread(str(shared_file("data", "pose_gt", "coco", name))), anns


def urfd_rgb(frame: int = 30) -> np.ndarray:
    """Frame ``frame`` (0-based) of URFD fall-01, RGB half (x = 320..640): 320x240 BGR."""
    cap = cv2.VideoCapture(str(shared_file("data", "urfd", "fall-01-cam0.mp4")))
    cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
    ok, img = cap.read()
    cap.release()
    assert ok, "cannot read the URFD video"
    return np.ascontiguousarray(img[:, 320:])


def close_fraction(person, ann) -> float:
    """Share of GT-visible joints predicted within 10% of the GT box's longer side."""
    pred = openpose18_to_coco17(person.keypoints)
    gt = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)
    vis = gt[:, 2] > 0
    tol = 0.1 * max(ann["bbox"][2], ann["bbox"][3])
    dist = np.hypot(*(pred[:, :2] - gt[:, :2]).T)
    return float(((dist < tol) & (pred[:, 2] > 0))[vis].mean())
