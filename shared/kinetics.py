"""The Kinetics-skeleton JSON of ST-GCN, as actionstream writes and reads it: the one home
of the format (``up --skeletons-out``, ``archive export``, the trainer and the replays).

A file holds ``data[].frame_index`` (the frame's seq, 0-based) and per person ``pose`` (36
values: x/width, y/height per OpenPose-18 joint, 0 where unseen), ``score`` (18) and
``track_id``; then ``label``/``label_index`` and, from actionstream, the frames' ``width``,
``height`` and ``fps``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from shared.errors import UserError
from shared.schemas import Skeletons
from shared.skeleton import Person, box_from_keypoints

OPENPOSE_JOINTS = 18


class ClipError(UserError, ValueError):
    """A skeleton clip file cannot be read; the text names the file and the problem."""


@dataclass(frozen=True)
class Clip:
    """One Kinetics-skeleton file as read (:func:`read_clip`): its frames ``(frame_index,
    [(pose (18, 2), score (18,), track_id or None), ...])`` in frame order (a frame_index given
    twice: the first), and what the file says of itself (``None``: not given)."""

    path: Path
    camera: Optional[str]
    fps: Optional[float]
    size: Optional[tuple[int, int]]  # the frame in pixels (width, height)
    frames: list


def read_clip(path: str | os.PathLike) -> Clip:
    """The one reader of the format: a Kinetics-skeleton file, checked (``pose`` and ``score``
    of 18 joints, finite; ``frame_index`` a number 0 or more). :class:`ClipError` naming the
    file and what is wrong with it. A file without frames is read (no frames): whether that
    is an error is the caller's to say."""
    path = Path(path)
    try:
        info = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ClipError(f"skeleton file {path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ClipError(f"skeleton file {path}: not JSON (binary, not UTF-8 text)") from None
    except ValueError as exc:
        raise ClipError(f"skeleton file {path}: not JSON ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("data"), list):
        raise ClipError(f"skeleton file {path}: not a Kinetics-skeleton file (no \"data\" list of frames)")
    frames: dict = {}
    for frame in info["data"]:
        index, people = _frame(path, frame)
        frames.setdefault(index, people)  # a frame_index given twice: the first
    camera = info.get("camera") if isinstance(info.get("camera"), str) else None
    return Clip(path, camera, _positive(info.get("fps")), _size(info), sorted(frames.items()))


def _frame(path: Path, frame: Any) -> tuple[int, list]:
    index = frame.get("frame_index") if isinstance(frame, dict) else None
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ClipError(f"skeleton file {path}: a frame's frame_index is {index!r}, not a "
                        "frame number (0 or more)")
    people = []
    for m, person in enumerate(frame.get("skeleton") or []):
        pose = person.get("pose") if isinstance(person, dict) else None
        score = person.get("score") if isinstance(person, dict) else None
        try:
            pose = np.asarray(pose, dtype=np.float64).reshape(OPENPOSE_JOINTS, 2)
            score = np.asarray(score, dtype=np.float64).reshape(OPENPOSE_JOINTS)
            if not (np.isfinite(pose).all() and np.isfinite(score).all()):
                raise ValueError("not finite")
        except (TypeError, ValueError):
            raise ClipError(
                f"skeleton file {path}: frame_index {index}, person {m}: expected \"pose\" of "
                f"{2 * OPENPOSE_JOINTS} numbers (x, y of OpenPose-18 joints) and \"score\" of "
                f"{OPENPOSE_JOINTS}") from None
        track = person.get("track_id")
        ok = isinstance(track, (int, float)) and math.isfinite(track)
        people.append((pose, score, int(track) if ok else None))
    return index, people


def _positive(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def _size(info: dict) -> Optional[tuple[int, int]]:
    w, h = _positive(info.get("width")), _positive(info.get("height"))
    return (int(w), int(h)) if w and h else None


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
    ``ts = seq / fps``. Frames of the export without people are kept (empty). Read by
    :func:`read_clip` (:class:`ClipError` naming the file and the reason).
    """
    clip = read_clip(path)  # ClipError naming the file and the reason
    camera = clip.camera or clip.path.stem
    scale = np.array(size, dtype=np.float64)
    out = []
    for seq, people in clip.frames:
        persons = []
        for pose, score, track in people:
            kp = np.zeros((OPENPOSE_JOINTS, 3), dtype=np.float64)
            kp[:, :2], kp[:, 2] = pose * scale, score
            kp[kp[:, 2] <= 0] = 0.0
            persons.append(Person(kp, box_from_keypoints(kp.astype(np.float32)),
                                  float(kp[:, 2].mean()), -1 if track is None else track))
        out.append(Skeletons(camera=camera, seq=seq, ts=seq / fps, width=int(size[0]),
                             height=int(size[1]), people=tuple(persons), model="export"))
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
