"""COCO keypoint AP (OKS, pycocotools) of the pose models on ground-truth image sets.

Each model's :class:`~shared.skeleton.Person` (OpenPose-18, frame pixels) is mapped to the
dataset's joint layout and scored with ``COCOeval(iouType="keypoints")`` (max 20 detections per
image, AP over OKS 0.50:0.95, and AP50). Detection score = ``Person.score``.

Datasets under ``<shared>/data/pose_gt`` (mmpose's tiny test subsets, so the numbers are a
smoke check, not a benchmark: 2 to 4 images, 5 to 14 people each; see :data:`DATASETS`):

* ``coco``: COCO-17, COCO sigmas, ``openpose18_to_coco17``.
* ``ochuman``: COCO-17 layout and sigmas.
* ``posetrack18``: COCO-17 *slots* but slots 1/2 are head_bottom/head_top (no eyes) and ears are
  never labelled, so those GT joints are set unlabelled (v=0) and OKS runs on the 14 COCO body
  joints + nose; COCO sigmas; area = 0.53 x box area (PoseTrack has none; mmpose's convention).
  PoseTrack's ignore regions are not used (people detected there count as false positives).
* ``crowdpose``: 14 joints (12 limbs, head-top, neck) with CrowdPose's own sigmas
  (.79,.79,.72,.72,.62,.62,1.07,1.07,.87,.87,.89,.89,.79,.79)/10. Limbs map from COCO-17, the neck
  is OpenPose's neck (MoveNet's is the shoulder mid-point), the head-top has no counterpart in
  either model, so it is set unlabelled in the GT. Area = 0.53 x box area as for PoseTrack.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from shared.skeleton import Person, openpose18_to_coco17

log = logging.getLogger(__name__)

COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07,
                        .87, .87, .89, .89]) / 10.0
CROWDPOSE_SIGMAS = np.array([.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89,
                             .79, .79]) / 10.0
COCO_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
              "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
              "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
BOX_AREA_RATIO = 0.53  # segmentation area / box area, for sets without areas (mmpose's choice)


def person_to_coco17(p: Person) -> np.ndarray:
    """``(17, 3)`` COCO-17 keypoints of a person."""
    return openpose18_to_coco17(p.keypoints)


def person_to_crowdpose14(p: Person) -> np.ndarray:
    """``(14, 3)`` CrowdPose keypoints: COCO joints 5..16, head-top (absent: zeros), neck."""
    out = np.zeros((14, 3), np.float32)
    out[:12] = openpose18_to_coco17(p.keypoints)[5:]
    out[13] = p.keypoints[1]
    return out


@dataclass(frozen=True)
class DatasetSpec:
    """Where a ground-truth set lives and how predictions map onto its joints."""

    name: str
    annotations: str  # JSON path relative to the pose_gt root
    images: str  # directory the JSON's file_name values are relative to
    sigmas: np.ndarray
    to_keypoints: Callable[[Person], np.ndarray]
    unlabelled: tuple[int, ...] = ()  # GT joints without a counterpart in the models: set v=0
    box_area: bool = False  # area = BOX_AREA_RATIO * box area (the set has no areas)
    note: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "coco": DatasetSpec("coco", "coco/test_coco.json", "coco", COCO_SIGMAS, person_to_coco17),
    "crowdpose": DatasetSpec("crowdpose", "crowdpose/test_crowdpose.json", "crowdpose",
                             CROWDPOSE_SIGMAS, person_to_crowdpose14, (12,), True,
                             "14 joints, head-top unscored, CrowdPose sigmas"),
    "ochuman": DatasetSpec("ochuman", "ochuman/test_ochuman.json", "ochuman", COCO_SIGMAS,
                           person_to_coco17),
    "posetrack18": DatasetSpec("posetrack18", "posetrack18/annotations/test_posetrack18_val.json",
                               "posetrack18", COCO_SIGMAS, person_to_coco17, (1, 2, 3, 4), True,
                               "head_bottom/head_top/ears unscored"),
}


@dataclass
class GroundTruth:
    """A COCO-format keypoint GT (fixed up per :class:`DatasetSpec`) and its image paths."""

    spec: DatasetSpec
    coco: dict
    image_paths: dict[int, Path] = field(default_factory=dict)

    @property
    def num_people(self) -> int:
        return sum(1 for a in self.coco["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"])


def fix_annotations(coco: dict, spec: DatasetSpec) -> dict:
    """A copy of ``coco`` with unmatched joints unlabelled, num_keypoints recounted, iscrowd an int,
    area filled in where the set has none."""
    coco = dict(coco)
    anns = []
    for ann in coco["annotations"]:
        ann = dict(ann)
        kp = np.asarray(ann.get("keypoints") or [0] * 3 * len(spec.sigmas), np.float64).reshape(-1, 3)
        kp[list(spec.unlabelled)] = 0.0
        kp[[COCO_NAMES.index(n) for n in ann.get("absent_keypoints", ())]] = 0.0  # ITOP's eyes/ears
        ann["keypoints"] = kp.ravel().tolist()
        ann["num_keypoints"] = int((kp[:, 2] > 0).sum())
        ann["iscrowd"] = int(bool(ann.get("iscrowd", 0)))
        if spec.box_area or "area" not in ann:
            ann["area"] = BOX_AREA_RATIO * float(ann["bbox"][2]) * float(ann["bbox"][3])
        anns.append(ann)
    coco["annotations"] = anns
    coco.setdefault("info", {})
    return coco


def load_ground_truth(name: str, root: str | Path) -> GroundTruth:
    """Load dataset ``name`` (a key of :data:`DATASETS`) from the pose_gt directory ``root``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    spec, root = DATASETS[name], Path(root)
    coco = fix_annotations(json.loads((root / spec.annotations).read_text()), spec)
    paths = {img["id"]: root / spec.images / img["file_name"] for img in coco["images"]}
    return GroundTruth(spec, coco, paths)


def load_coco_file(path: str | Path, image_root: str | Path | None = None,
                   sigmas: np.ndarray = COCO_SIGMAS) -> GroundTruth:
    """Any COCO-17 keypoint JSON (e.g. an ITOP conversion: joints an annotation lists in
    ``absent_keypoints`` are unlabelled) as a :class:`GroundTruth`; ``file_name`` is relative to
    ``image_root`` (default: the JSON's directory) unless absolute."""
    path = Path(path)
    spec = DatasetSpec(path.stem, str(path), str(image_root or path.parent), sigmas, person_to_coco17)
    coco = fix_annotations(json.loads(path.read_text()), spec)
    base = Path(spec.images)
    return GroundTruth(spec, coco, {img["id"]: base / img["file_name"] for img in coco["images"]})


def detections_for(gt: GroundTruth, image_id: int, people: Sequence[Person]) -> list[dict]:
    """COCO result entries ``{image_id, category_id, keypoints (3K,), score}`` for one image."""
    return [{"image_id": image_id, "category_id": 1, "score": float(p.score),
             "keypoints": gt.spec.to_keypoints(p).astype(np.float64).ravel().tolist()}
            for p in people]


def predict(model, gt: GroundTruth, repeat: int = 1) -> tuple[list[dict], list[float], list[float]]:
    """Run ``model.infer([img])`` on every image (after one untimed warm-up), ``repeat`` times.

    Returns (detections of the first pass, wall ms per call, process CPU ms per call); the
    times cover the model and its decoding, one frame at a time as the pose worker sees a
    single camera. Process CPU time sums all threads, so it can exceed the wall time.
    """
    images = {i: cv2.imread(str(p)) for i, p in gt.image_paths.items()}
    missing = [str(gt.image_paths[i]) for i, img in images.items() if img is None]
    if missing:
        raise FileNotFoundError(f"cannot read images: {missing}")
    model.infer([next(iter(images.values()))])
    dets, wall, cpu = [], [], []
    for rep in range(max(1, repeat)):
        for image_id, img in images.items():
            t0, c0 = time.perf_counter(), time.process_time()
            people = model.infer([img])[0]
            wall.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
            if rep == 0:
                dets.extend(detections_for(gt, image_id, people))
    return dets, wall, cpu


def keypoint_ap(coco_gt: dict, detections: list[dict], sigmas: np.ndarray) -> tuple[float, float]:
    """(AP@[.5:.95], AP50) of ``detections`` against the COCO-format dict ``coco_gt``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_gt
        gt.createIndex()
        dt = gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.params.imgIds = sorted(img["id"] for img in coco_gt["images"])
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, ap50 = float(ev.stats[0]), float(ev.stats[1])
    return max(ap, 0.0), max(ap50, 0.0)  # -1 = no GT person at all


@dataclass
class EvalRow:
    """One (model, dataset) result; times in milliseconds per frame (medians)."""

    model: str
    dataset: str
    images: int
    people: int
    detections: int
    ap: float
    ap50: float
    wall_ms: float
    cpu_ms: float
    note: str = ""


def evaluate_model(label: str, model, gt: GroundTruth, repeat: int = 1) -> EvalRow:
    """AP / AP50 and per-frame timing of one model on one ground-truth set."""
    dets, wall, cpu = predict(model, gt, repeat)
    ap, ap50 = keypoint_ap(gt.coco, dets, gt.spec.sigmas)
    row = EvalRow(label, gt.spec.name, len(gt.image_paths), gt.num_people, len(dets), ap, ap50,
                  statistics.median(wall), statistics.median(cpu), gt.spec.note)
    log.info("%s on %s: AP %.3f AP50 %.3f (%d images)", label, gt.spec.name, ap, ap50, row.images)
    return row


def evaluate(models: Mapping[str, object], datasets: Sequence[str], root: str | Path,
             progress: bool = True, repeat: int = 1) -> list[EvalRow]:
    """Every model on every dataset -> rows (model-major)."""
    from tqdm import tqdm

    gts = [load_ground_truth(d, root) for d in datasets]
    jobs = [(label, m, gt) for label, m in models.items() for gt in gts]
    return [evaluate_model(label, m, gt, repeat)
            for label, m, gt in tqdm(jobs, desc="pose eval", disable=not progress)]


def format_table(rows: Sequence[EvalRow]) -> str:
    """A Markdown table of the rows, with the small-sample caveat."""
    lines = ["| model | dataset | images | people | AP | AP50 | ms/frame (wall) | CPU ms/frame | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.dataset} | {r.images} | {r.people} | {r.ap:.3f} | {r.ap50:.3f} "
                     f"| {r.wall_ms:.1f} | {r.cpu_ms:.1f} | {r.note} |")
    few = sorted({r.dataset for r in rows if r.images < 20})
    if few:
        lines.append(f"\nFew images in {', '.join(few)} (< 20 each): each person moves AP by several "
                     "points; read these as a smoke check, not a benchmark.")
    lines.append("Times: median over the images of one infer([frame]) call (model + decode) at "
                 "each model's input size (the pose worker's defaults unless --input-size).")
    return "\n".join(lines)
