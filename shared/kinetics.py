"""The Kinetics-skeleton JSON of ST-GCN, as actionstream writes and reads it: the one home
of the format (``up --skeletons-out``, ``archive export``, the trainer and the replays).

A file holds ``data[].frame_index`` (the frame's seq, 0-based) and per person ``pose`` (36
values: x/width, y/height per OpenPose-18 joint, 0 where unseen), ``score`` (18) and
``track_id``; then ``label``/``label_index`` and, from actionstream, the frames' ``width``,
``height`` and ``fps``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from shared.schemas import Skeletons
from shared.skeleton import Person, box_from_keypoints

OPENPOSE_JOINTS = 18


class ClipError(ValueError):
    """A skeleton clip file cannot be read; the text names the file and the problem."""


def kinetics_frame(seq: int, width: int, height: int, people: list[Person]) -> dict:
    """One frame of the ST-GCN Kinetics-skeleton layout: ``frame_index`` = seq (0-based, as
    events' frames), per person ``pose`` 36 values (x, y per joint, normalised 0..1),
    ``score`` 18 values, plus ``track_id``."""
    out = []
    for p in people:
        kp = p.keypoints.astype(np.float64)  # float64: 4 decimals print as 4 decimals
        xy = kp[:, :2] / np.array([width, height], dtype=np.float64)
        xy[kp[:, 2] <= 0] = 0.0
        out.append({"pose": np.round(xy, 4).ravel().tolist(), "score": np.round(kp[:, 2], 4).tolist(),
                    "track_id": p.track_id})
    return {"frame_index": seq, "skeleton": out}


def write_kinetics_frames(frames: Iterable[tuple[int, int, int, list[Person]]], camera: str,
                          path: str | Path, fps: Optional[float] = None) -> Path:
    """An export of ``frames`` (``(seq, width, height, people)``, in order), written one frame
    at a time (also the archive's exporter, ``actionstream archive export``). After the
    Kinetics fields: the last frame's ``width`` and ``height`` in pixels and ``fps`` (when
    known), so that a replay of the file (``up --skeletons``) sees the frames as the run did."""
    size = None
    with open(path, "w") as fh:
        fh.write('{"camera": %s, "data": [' % json.dumps(camera))
        for i, (seq, width, height, people) in enumerate(frames):
            fh.write((", " if i else "") + json.dumps(kinetics_frame(seq, width, height, people)))
            size = (width, height)
        fh.write('], "label": "unknown", "label_index": -1')
        if size is not None:
            fh.write(', "width": %d, "height": %d' % size)
        if fps:
            fh.write(', "fps": %s' % json.dumps(fps))
        fh.write("}")
    return Path(path)


# -- actionstream's own exports (`actionstream up --skeletons-out DIR`) -------------------
EXPORT_SCALE = 1000  # pixel size given to the normalised 0..1 coordinates of an export


def read_exported_skeletons(path: str | os.PathLike, fps: float = 30.0,
                            size: tuple[int, int] = (EXPORT_SCALE, EXPORT_SCALE)):
    """One camera's exported JSON -> ``(camera, [Skeletons, ...])`` in seq order.

    The export holds ``data[].frame_index`` (the seq, 0-based), per person ``pose`` (36 values,
    x/width, y/height), ``score`` (18) and ``track_id``. Keypoints are scaled back to a
    ``size`` frame (the export does not keep the real one; x/width is what the windows
    use, so only the nearest-person order can differ), boxes come from the keypoints and
    ``ts = seq / fps``. Frames of the export without people are kept (empty).
    """
    path = Path(path)
    try:
        info = json.loads(path.read_text())
        frames = sorted(info["data"], key=lambda f: int(f["frame_index"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClipError(f"{path}: not an actionstream skeleton export: {exc}") from None
    camera = str(info.get("camera") or path.stem)
    scale = np.array(size, dtype=np.float64)
    out = []
    for frame in frames:
        people = []
        for sk in frame.get("skeleton") or []:
            kp = np.zeros((OPENPOSE_JOINTS, 3), dtype=np.float64)
            kp[:, :2] = np.asarray(sk["pose"], dtype=np.float64).reshape(OPENPOSE_JOINTS, 2) * scale
            kp[:, 2] = sk["score"]
            kp[kp[:, 2] <= 0] = 0.0
            people.append(Person(kp, box_from_keypoints(kp.astype(np.float32)),
                                 float(kp[:, 2].mean()), int(sk.get("track_id", -1))))
        seq = int(frame["frame_index"])
        out.append(Skeletons(camera=camera, seq=seq, ts=seq / fps, width=int(size[0]),
                             height=int(size[1]), people=tuple(people), model="export"))
    return camera, out


def write_exported_skeletons(path: str | os.PathLike, camera: str,
                             frames: list[list[dict]]) -> Path:
    """Write an export-format JSON (tests, synthetic data): ``frames[i]`` is frame i's list
    of ``{"pose": 36, "score": 18, "track_id": int}``."""
    data = [{"frame_index": i, "skeleton": people} for i, people in enumerate(frames)]
    path = Path(path)
    path.write_text(json.dumps({"camera": camera, "data": data, "label": "unknown",
                                "label_index": -1}))
    return path
