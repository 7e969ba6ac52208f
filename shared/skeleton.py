"""The canonical skeleton type and the keypoint layouts, as data.

Every pose model is adapted at the edge to :class:`Person`: 18 OpenPose joints, each
``(x, y, confidence)`` in source-frame pixels, plus a box and a score. Layouts (OpenPose-18,
COCO-17, NTU-25) are tables, and conversions between them are index maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_JOINTS = 18  # the canonical layout is OpenPose-18


@dataclass(frozen=True)
class Layout:
    name: str
    joints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    center: int  # joint used as the body centre by ST-GCN's "spatial" partition

    @property
    def num_joints(self) -> int:
        return len(self.joints)


OPENPOSE_18 = Layout(
    name="openpose",
    joints=(
        "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
        "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
    ),
    edges=(
        (4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8), (11, 5), (8, 2),
        (5, 1), (2, 1), (0, 1), (15, 0), (14, 0), (17, 15), (16, 14),
    ),
    center=1,
)

COCO_17 = Layout(
    name="coco",
    joints=(
        "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
        "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
    ),
    edges=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
        (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    center=0,
)

NTU_25 = Layout(
    name="ntu-rgb+d",
    joints=(
        "spine_base", "spine_mid", "neck", "head", "l_shoulder", "l_elbow", "l_wrist", "l_hand",
        "r_shoulder", "r_elbow", "r_wrist", "r_hand", "l_hip", "l_knee", "l_ankle", "l_foot",
        "r_hip", "r_knee", "r_ankle", "r_foot", "spine_shoulder", "l_hand_tip", "l_thumb",
        "r_hand_tip", "r_thumb",
    ),
    edges=tuple(
        (i - 1, j - 1)
        for i, j in (
            (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
            (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
            (20, 19), (22, 23), (23, 8), (24, 25), (25, 12),
        )
    ),
    center=20,
)

LAYOUTS = {layout.name: layout for layout in (OPENPOSE_18, COCO_17, NTU_25)}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton layout {name!r}; known: {sorted(LAYOUTS)}") from None


# OpenPose-18 joint j is COCO-17 joint COCO_TO_OPENPOSE[j]; -1 marks the neck (derived).
COCO_TO_OPENPOSE = np.array(
    [OPENPOSE_18.joints[j] == "neck" and -1 or COCO_17.joints.index(OPENPOSE_18.joints[j])
     for j in range(NUM_JOINTS)]
)


def coco17_to_openpose18(kp: np.ndarray) -> np.ndarray:
    """COCO-17 keypoints ``(..., 17, 3)`` -> OpenPose-18 ``(..., 18, 3)``.

    The neck is the mid-point of the shoulders with the lower of their two confidences
    (zero, and at the origin, when either shoulder is missing).
    """
    kp = np.asarray(kp, dtype=np.float32)
    if kp.shape[-2:] != (17, 3):
        raise ValueError(f"COCO-17 keypoints must have shape (..., 17, 3), got {kp.shape}")
    out = kp[..., np.maximum(COCO_TO_OPENPOSE, 0), :].copy()
    ls, rs = kp[..., 5, :], kp[..., 6, :]
    conf = np.minimum(ls[..., 2], rs[..., 2])
    neck = np.concatenate([(ls[..., :2] + rs[..., :2]) / 2, conf[..., None]], axis=-1)
    neck[conf <= 0] = 0.0
    out[..., 1, :] = neck
    return out


def openpose18_to_coco17(kp: np.ndarray) -> np.ndarray:
    """OpenPose-18 ``(..., 18, 3)`` -> COCO-17 ``(..., 17, 3)`` (the neck is dropped)."""
    kp = np.asarray(kp, dtype=np.float32)
    if kp.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"OpenPose-18 keypoints must have shape (..., 18, 3), got {kp.shape}")
    order = [OPENPOSE_18.joints.index(name) for name in COCO_17.joints]
    return kp[..., order, :].copy()


def _as_keypoints(kp: np.ndarray) -> np.ndarray:
    kp = np.asarray(kp, dtype=np.float32)
    if kp.shape != (NUM_JOINTS, 3):
        raise ValueError(f"keypoints must have shape (18, 3) = (joints, x/y/confidence), got {kp.shape}")
    if not np.isfinite(kp).all():
        raise ValueError("keypoints contain NaN or infinity")
    return kp


@dataclass(frozen=True, eq=False)
class Person:
    """One person in one frame: OpenPose-18 keypoints in pixels, a box and a score.

    ``keypoints``: float32 ``(18, 3)`` = (joint, x/y/confidence); a missing joint is all zeros.
    ``box``: float32 ``(4,)`` = x1, y1, x2, y2 in pixels. ``track_id``: -1 until tracked.
    """

    keypoints: np.ndarray
    box: np.ndarray
    score: float
    track_id: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "keypoints", _as_keypoints(self.keypoints))
        box = np.asarray(self.box, dtype=np.float32)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise ValueError(f"box must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
        object.__setattr__(self, "box", box)
        score = float(self.score)
        if not np.isfinite(score):
            raise ValueError("person score is NaN or infinite")
        object.__setattr__(self, "score", score)

    def with_track(self, track_id: int) -> "Person":
        return Person(self.keypoints, self.box, self.score, int(track_id))


def box_from_keypoints(kp: np.ndarray, min_conf: float = 0.0) -> np.ndarray:
    """Tight box ``(x1, y1, x2, y2)`` around the joints with confidence > ``min_conf``."""
    kp = np.asarray(kp, dtype=np.float32)
    seen = kp[:, 2] > min_conf
    if not seen.any():
        return np.zeros(4, dtype=np.float32)
    xy = kp[seen, :2]
    return np.array([*xy.min(axis=0), *xy.max(axis=0)], dtype=np.float32)
