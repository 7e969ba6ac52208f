"""ITOP (top view) -> COCO keypoint JSON, with depth images and masks, optionally mixed with COCO.

ITOP label files (HDF5): ``id`` ``(N,)`` byte strings (e.g. ``b"00_00000"``), ``image_coordinates``
``(N, 15, 2)`` int (x, y pixels of the 320x240 depth image), ``visible_joints`` ``(N, 15)``,
``is_valid`` ``(N,)``. Depth files: ``id`` ``(N,)`` and ``data`` ``(N, 240, 320)`` float metres.
ITOP joints: 0 Head, 1 Neck, 2 R Shoulder, 3 L Shoulder, 4 R Elbow, 5 L Elbow, 6 R Hand,
7 L Hand, 8 Torso, 9 R Hip, 10 L Hip, 11 R Knee, 12 L Knee, 13 R Foot, 14 L Foot.

Mapping to COCO-17 (:data:`ITOP_TO_COCO`): head -> nose, shoulders, elbows, hands -> wrists,
hips, knees, feet -> ankles. The neck has no COCO-17 slot: it is kept as ``ann["neck"] = [x, y, v]``
(OpenPose-18 has a neck; :mod:`dataset` uses it instead of the shoulder mid-point). The torso
joint gives the person's centre, ``ann["center"] = [x, y]``.

Visibility, literally as issue 4 states: **1** where ITOP has coordinates for the joint (inside
the image), **0** where it has not (x = y = 0), **2** for the COCO joints ITOP lacks (eyes, ears;
x = y = 0). As COCO reads v=2 as "labelled and visible", each ITOP annotation also lists those
joints in ``absent_keypoints`` (names); :mod:`dataset` and :mod:`workers.offline.posetrain.evaluate` treat the
listed joints as unlabelled (mixed-in COCO annotations have no such list and keep their eyes/ears).
ITOP's own ``visible_joints`` is kept in ``ann["itop_visible"]``.

Frames with ``is_valid == 0`` or any negative coordinate are skipped. With a depth file each kept
frame is written as an 8-bit 3-channel PNG (depth clipped to ``max_depth`` metres, near = bright)
plus a mask PNG (255 = labelled area, 0 = unlabelled: pixels without a depth reading), which the
trainer uses to zero the loss there. ``mix_coco`` adds ``ratio`` COCO images per ITOP image.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from shared.skeleton import COCO_17
from workers.offline.posetrain.evaluate import COCO_NAMES

log = logging.getLogger(__name__)

ITOP_JOINTS = ("head", "neck", "r_shoulder", "l_shoulder", "r_elbow", "l_elbow", "r_hand", "l_hand",
               "torso", "r_hip", "l_hip", "r_knee", "l_knee", "r_foot", "l_foot")
# COCO-17 joint -> ITOP joint (-1: ITOP lacks it)
ITOP_TO_COCO = np.array([0, -1, -1, -1, -1, 3, 2, 5, 4, 7, 6, 10, 9, 12, 11, 14, 13])
ITOP_NECK, ITOP_TORSO = 1, 8
ITOP_SIZE = (320, 240)  # (width, height) of ITOP depth images
ABSENT = tuple(COCO_NAMES[j] for j in np.flatnonzero(ITOP_TO_COCO < 0))
BOX_MARGIN = 0.15  # box = keypoint extent grown by this fraction on each side


@dataclass
class ItopLabels:
    """The arrays of one ITOP label file (see the module docstring for shapes)."""

    ids: list[str]
    coords: np.ndarray  # (N, 15, 2)
    visible: np.ndarray  # (N, 15)
    valid: np.ndarray  # (N,)


def read_labels(path: str | Path) -> ItopLabels:
    """Read an ITOP ``*_labels.h5`` file."""
    import h5py

    with h5py.File(path, "r") as f:
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in f["id"][:]]
        return ItopLabels(ids, np.asarray(f["image_coordinates"][:], np.float64),
                          np.asarray(f["visible_joints"][:]), np.asarray(f["is_valid"][:]))


def frame_annotation(coords: np.ndarray, visible: np.ndarray, size=ITOP_SIZE) -> dict:
    """One ITOP person ``coords`` ``(15, 2)`` -> COCO annotation fields (no ids)."""
    w, h = size
    inside = (coords[:, 0] >= 0) & (coords[:, 0] < w) & (coords[:, 1] >= 0) & (coords[:, 1] < h)
    kp = np.zeros((17, 3))
    for c, i in enumerate(ITOP_TO_COCO):
        if i < 0:
            kp[c, 2] = 2  # literal: joints ITOP lacks are flagged 2 (see absent_keypoints)
        elif inside[i]:
            kp[c] = (*coords[i], 1)
    labelled = np.array([inside[i] for i in ITOP_TO_COCO if i >= 0] + [inside[ITOP_NECK]])
    pts = np.concatenate([coords[ITOP_TO_COCO[ITOP_TO_COCO >= 0]], coords[[ITOP_NECK]]])[labelled]
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    mx, my = BOX_MARGIN * (x1 - x0 + 1), BOX_MARGIN * (y1 - y0 + 1)
    x0, y0, x1, y1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
    neck = [*coords[ITOP_NECK], 1] if inside[ITOP_NECK] else [0, 0, 0]
    return {"keypoints": kp.ravel().tolist(), "num_keypoints": int((kp[:, 2] == 1).sum()),
            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
            "neck": [float(v) for v in neck], "center": [float(v) for v in coords[ITOP_TORSO]],
            "itop_visible": [int(v) for v in visible], "absent_keypoints": list(ABSENT),
            "iscrowd": 0, "category_id": 1}


def depth_to_image(depth: np.ndarray, max_depth: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Depth ``(H, W)`` metres -> (BGR uint8 ``(H, W, 3)``, mask uint8 ``(H, W)`` 255 = has depth)."""
    depth = np.nan_to_num(np.asarray(depth, np.float32), nan=0.0)
    valid = depth > 0
    gray = np.where(valid, 255.0 * (1.0 - np.clip(depth / max_depth, 0.0, 1.0)), 0.0)
    img = cv2.cvtColor(gray.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    return img, (valid * 255).astype(np.uint8)


def _category() -> dict:
    return {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_NAMES),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_17.edges]}


def convert(labels_path: str | Path, out_dir: str | Path, depth_path: Optional[str | Path] = None,
            max_depth: float = 4.0, limit: Optional[int] = None) -> Path:
    """Write ``out_dir/itop_coco.json`` (+ ``images/``, ``masks/`` when ``depth_path`` is given).

    Returns the JSON path. Image ``file_name`` = ``images/<ITOP id>.png`` (relative to ``out_dir``);
    without depth data the images are expected to be put there by other means.
    """
    labels, out_dir = read_labels(labels_path), Path(out_dir)
    depth = _open_depth(depth_path)
    images, anns, skipped = [], [], {"invalid": 0, "negative": 0}
    for n, frame_id in enumerate(labels.ids):
        if not labels.valid[n]:
            skipped["invalid"] += 1
            continue
        if (labels.coords[n] < 0).any():
            skipped["negative"] += 1
            continue
        image = {"id": len(images) + 1, "file_name": f"images/{frame_id}.png", "width": ITOP_SIZE[0],
                 "height": ITOP_SIZE[1], "itop_id": frame_id}
        if depth is not None:
            image.update(_write_depth(depth, frame_id, out_dir, max_depth))
        images.append(image)
        ann = frame_annotation(labels.coords[n], labels.visible[n], (image["width"], image["height"]))
        anns.append({"id": len(anns) + 1, "image_id": image["id"], **ann})
        if limit and len(images) >= limit:
            break
    coco = {"info": {"description": f"ITOP {Path(labels_path).name} as COCO-17", "skipped": skipped},
            "images": images, "annotations": anns, "categories": [_category()]}
    out = out_dir / "itop_coco.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco))
    log.info("ITOP: %d frames kept, skipped %s -> %s", len(images), skipped, out)
    return out


def _open_depth(depth_path) -> Optional[dict]:
    """``{id: depth (H, W)}`` loaded lazily from an ITOP depth HDF5 (None without one)."""
    if depth_path is None:
        return None
    import h5py

    with h5py.File(depth_path, "r") as f:
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in f["id"][:]]
        data = np.asarray(f["data"][:])
    return dict(zip(ids, data))


def _write_depth(depth: dict, frame_id: str, out_dir: Path, max_depth: float) -> dict:
    if frame_id not in depth:
        raise KeyError(f"frame {frame_id} is not in the depth file")
    img, mask = depth_to_image(depth[frame_id], max_depth)
    for sub, arr in (("images", img), ("masks", mask)):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out_dir / sub / f"{frame_id}.png"), arr)
    return {"mask_file": f"masks/{frame_id}.png", "width": img.shape[1], "height": img.shape[0]}


def mix_coco(itop_json: str | Path, coco_json: str | Path, coco_images: str | Path, ratio: float,
             out_path: str | Path, seed: int = 0) -> Path:
    """Add ``round(ratio * n_itop)`` random COCO images (with >= 1 labelled person) to an ITOP JSON.

    COCO images keep their annotations (crowd / unlabelled people included: the dataset masks
    them) and get absolute ``file_name`` paths; ids are renumbered after the ITOP ones.
    """
    itop, coco = json.loads(Path(itop_json).read_text()), json.loads(Path(coco_json).read_text())
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    pool = [img for img in coco["images"]
            if any(a.get("num_keypoints", 0) > 0 for a in by_image.get(img["id"], []))]
    want = min(len(pool), int(round(ratio * len(itop["images"]))))
    rng = np.random.default_rng(seed)
    next_img = max((i["id"] for i in itop["images"]), default=0) + 1
    next_ann = max((a["id"] for a in itop["annotations"]), default=0) + 1
    for k in rng.choice(len(pool), size=want, replace=False):
        img = dict(pool[k], id=next_img, source="coco",
                   file_name=str((Path(coco_images) / pool[k]["file_name"]).resolve()))
        itop["images"].append(img)
        for a in by_image[pool[k]["id"]]:
            itop["annotations"].append(dict(a, id=next_ann, image_id=next_img))
            next_ann += 1
        next_img += 1
    itop["info"]["coco_mix"] = {"source": str(coco_json), "ratio": ratio, "images": want}
    out_path = Path(out_path)
    out_path.write_text(json.dumps(itop))
    log.info("mixed %d COCO images into %s", want, out_path)
    return out_path
