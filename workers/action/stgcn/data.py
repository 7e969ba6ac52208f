"""Reading Kinetics-skeleton JSON clips the way the original feeder does (numpy only).

A re-implementation of ``feeder/feeder_kinetics.py`` (test settings: no random choose,
shift or move, no pose matching) and of ``tools/kinetics_gendata.py``. A clip file is
``{"data": [{"frame_index": i, "skeleton": [{"pose": [x0, y0, x1, y1, ...],
"score": [c0, c1, ...]}, ...]}, ...], "label": str, "label_index": int}`` with x, y
already divided by the frame size (0..1).

Quirks kept on purpose, because the official models were trained and evaluated on them:
``frame_index`` is the array index as it is (1-based in the real files, so frame 0 stays
empty); persons are re-ordered per frame by their summed joint scores (no tracking); x, y
of zero-confidence joints are 0, not -0.5.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NUM_CHANNELS = 3  # x, y, confidence
OPENPOSE_JOINTS = 18


class ClipError(ValueError):
    """A skeleton clip file cannot be read; the text names the file and the problem."""


def read_kinetics_json(path: str | os.PathLike, window: int = 300, num_person_in: int = 5,
                       num_person_out: int = 2,
                       num_joints: int = OPENPOSE_JOINTS) -> tuple[np.ndarray, int]:
    """One Kinetics-skeleton JSON clip -> ``(data (3, window, V, num_person_out) float32,
    label_index)``; ``label_index`` is -1 when the file has none.

    Computed in float64 and cast once, so it is bit-identical to the original feeder's
    output cast to float32. A ``frame_index`` outside ``0 .. window-1`` raises
    :class:`ClipError` (the original raises IndexError).
    """
    path = Path(path)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClipError(f"{path}: cannot read the skeleton clip: {exc}") from None
    data = fill_frames(info, path, window, num_person_in, num_joints)
    centre(data)
    data = sort_persons(data)[..., :num_person_out]
    label = info.get("label_index", -1) if isinstance(info, dict) else -1
    return data.astype(np.float32), int(label if label is not None else -1)


def fill_frames(info: Any, path: Path, window: int, num_person_in: int,
                num_joints: int) -> np.ndarray:
    """Skeletons into a float64 array ``(3, window, V, num_person_in)``, zeros elsewhere."""
    if not isinstance(info, dict) or not isinstance(info.get("data"), list):
        raise ClipError(f"{path}: not a Kinetics-skeleton clip (no 'data' list)")
    data = np.zeros((NUM_CHANNELS, window, num_joints, num_person_in))
    for frame in info["data"]:
        t = frame.get("frame_index")
        if not isinstance(t, int) or not 0 <= t < window:
            raise ClipError(f"{path}: frame_index {t!r} is outside 0..{window - 1} (window)")
        for m, skeleton in enumerate(frame.get("skeleton") or []):
            if m >= num_person_in:
                break
            pose, score = skeleton.get("pose", []), skeleton.get("score", [])
            if len(pose) != 2 * num_joints or len(score) != num_joints:
                raise ClipError(f"{path}: frame_index {t}, person {m}: expected {2 * num_joints} "
                                f"pose values and {num_joints} scores, got {len(pose)} and "
                                f"{len(score)}")
            data[0, t, :, m] = pose[0::2]
            data[1, t, :, m] = pose[1::2]
            data[2, t, :, m] = score
    return data


def centre(data: np.ndarray) -> None:
    """In place, ``(3, T, V, M)``: x, y -= 0.5; x = y = 0 where the confidence is exactly 0."""
    data[0:2] -= 0.5
    missing = data[2] == 0
    data[0][missing] = 0
    data[1][missing] = 0


def sort_persons(data: np.ndarray) -> np.ndarray:
    """``(3, T, V, M)`` with the persons of every frame ordered by descending total score.

    Uses numpy's default (non-stable) argsort of the negated totals, like the original.
    """
    order = (-data[2].sum(axis=1)).argsort(axis=1)  # (T, M)
    return np.take_along_axis(data, order[None, :, None, :], axis=3)
