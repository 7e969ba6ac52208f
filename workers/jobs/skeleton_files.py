"""Skeleton files as a replay source: Kinetics-skeleton JSON straight into the action stage.

The format (:mod:`shared.kinetics`, its writer and its one reader) is the one ST-GCN is trained
on and the one ``up --skeletons-out`` and ``archive export`` write: ``{"data": [{"frame_index":
i, "skeleton": [{"pose": [x0, y0, ...] (18 joints, x/width, y/height in 0..1), "score": [c0,
...] (18), "track_id": n}, ...]}, ...], "label": ..., "label_index": ...}``. actionstream's
exports also carry ``camera``, ``width``, ``height`` (the frame in pixels) and ``fps``.

A replay of a file publishes one :class:`~shared.schemas.Skeletons` per frame: ``seq`` is
the ``frame_index`` (so events name the file's frames), ``ts`` counts from the job's start
at the file's ``fps`` (else the job's: ``--fps``, else the action model's), keypoints are
scaled back to the file's ``width`` x ``height`` (else ``--size``, by default Kinetics'
340x256: only the aspect matters to the action stage). A person without ``track_id`` (the
original Kinetics files: no tracking) is tracked by its place in the frame's list. A folder
is its ``*.json`` files in name order, played back to back as one camera: seq and ts go on
from file to file, and a file's track ids are shifted past those of the files before it,
so no track spans two files. A file that cannot be read (not JSON, not this layout, no
frames) is one WARNING line naming it and the reason; the job goes on with the others.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from shared import codec, kinetics
from shared.kinetics import OPENPOSE_JOINTS as JOINTS, Clip, ClipError
from shared.schemas import Skeletons
from shared.skeleton import Person, box_from_keypoints
from workers.jobs.replay import JobSpec, ReplayError
from workers.jobs.replay_sources import Item

log = logging.getLogger(__name__)

DEFAULT_SIZE = (340, 256)  # the frame Kinetics-skeleton was extracted at (ST-GCN's tools)
MODEL = "skeleton-file"  # the Skeletons' pose model field


# the format's one error (:func:`shared.kinetics.read_clip`): the text names the file and the reason
SkeletonFileError = ClipError


def parse_size(text: Optional[str]) -> tuple[int, int]:
    """``WxH`` (``--size``) -> ``(W, H)``; empty: :data:`DEFAULT_SIZE`. ReplayError when malformed."""
    if not text:
        return DEFAULT_SIZE
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m or not int(m.group(1)) or not int(m.group(2)):
        raise ReplayError(f"--size {text!r}: give the frame in pixels as WIDTHxHEIGHT, e.g. 340x256")
    return int(m.group(1)), int(m.group(2))


def skeleton_files(path: str | Path) -> list[Path]:
    """The skeleton files of ``path``: the file, or a folder's ``*.json`` in name order;
    ReplayError when there is none."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ReplayError(f"skeleton file {path} does not exist")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".json")
    if not files:
        raise ReplayError(f"folder {path} holds no skeleton files (*.json)")
    return files


def read_clip(path: Path) -> Clip:
    """One skeleton file, checked (:func:`shared.kinetics.read_clip`); SkeletonFileError saying
    what is wrong with it, also when it holds no frames (nothing to replay)."""
    clip = kinetics.read_clip(path)
    if not clip.frames:
        raise SkeletonFileError(f"skeleton file {path}: holds no frames")
    return clip


def _reasons(bad: list) -> str:
    return "; ".join(reason for _, reason in bad)


def check_skeletons(spec: JobSpec, warn: bool = True) -> int:
    """Frames the replay of ``spec`` publishes (its readable files'). Each unreadable file is
    one WARNING line (unless not ``warn``); ReplayError (one line, every reason) when none is
    readable."""
    parse_size(spec.size)
    frames, bad = 0, []
    for f in skeleton_files(spec.path):
        try:
            frames += len(read_clip(f).frames)
        except SkeletonFileError as exc:
            bad.append((str(f), str(exc)))
    if len(bad) == 1 and Path(spec.path).is_file():
        raise ReplayError(bad[0][1])
    if not frames and bad:
        raise ReplayError(f"folder {spec.path} holds no readable skeleton file: {_reasons(bad)}")
    for _, reason in bad if warn else ():
        log.warning("%s; skipped", reason)
    return frames


def first_camera(path: str | Path) -> str:
    """The camera a replay of ``path`` is named after: the first readable file's ``camera``,
    else its name (a folder: the folder's name)."""
    p = Path(path)
    if p.is_dir():
        return p.name
    try:
        return read_clip(p).camera or p.stem
    except SkeletonFileError:
        return p.stem


def skeleton_items(spec: JobSpec, after_seq: Optional[int], bad: list,
                   camera: Optional[str] = None) -> Iterator[Item]:
    """The frames of the skeleton files of ``spec`` after ``after_seq``, as Skeletons of
    ``camera`` (default: the replay camera); unreadable files in ``bad`` (file, reason)."""
    camera = camera or spec.replay_camera
    fallback = parse_size(spec.size)
    seq0, ts0, track0 = 0, spec.t0, 0
    for f in skeleton_files(spec.path):
        try:
            clip = read_clip(f)  # one file in memory at a time
        except SkeletonFileError as exc:
            log.warning("%s; skipped", exc)
            bad.append((str(f), str(exc)))
            continue
        fps = clip.fps or spec.fps or 30.0
        width, height = clip.size or fallback
        first = clip.frames[0][0]
        top = -1
        for index, people in clip.frames:
            seq, ts = seq0 + index, ts0 + (index - first) / fps
            tracks = [m if t is None else t for m, (_, _, t) in enumerate(people)]  # none: its place
            persons = tuple(_person(p, s, t + track0 if t >= 0 else t, width, height)
                            for (p, s, _), t in zip(people, tracks))
            top = max([top] + tracks)
            if after_seq is None or seq > after_seq:
                yield Item(seq, ts, codec.encode_skeletons(
                    Skeletons(camera, seq, ts, width, height, persons, MODEL)))
        last = clip.frames[-1][0]
        seq0, ts0, track0 = seq0 + last + 1, ts0 + (last - first + 1) / fps, track0 + top + 1


def _person(pose: np.ndarray, score: np.ndarray, track: int, width: int, height: int) -> Person:
    kp = np.zeros((JOINTS, 3), dtype=np.float64)
    kp[:, 0], kp[:, 1], kp[:, 2] = pose[:, 0] * width, pose[:, 1] * height, score
    kp[kp[:, 2] <= 0] = 0.0  # a joint not seen: all zeros, as the pose stage sends it
    kp32 = kp.astype(np.float32)
    seen = kp[:, 2] > 0
    return Person(kp32, box_from_keypoints(kp32), float(kp[seen, 2].mean()) if seen.any() else 0.0, track)


def card_fps(action_model: Optional[str] = None) -> float:
    """The action model's fps (its card): the rate of skeleton files that give none and no
    ``--fps`` (``action_model``: else ACTIONSTREAM_ACTION_MODEL, else the shipped model)."""
    from shared.modelpaths import resolve_action_model
    from shared.settings import load_settings
    from workers.action.card import load_card
    from workers.inference.sessions import default_action_model

    return float(load_card(resolve_action_model(load_settings(action_model=action_model),
                                                default_action_model())).fps)


def skeleton_spec(args, common: dict, now: float) -> JobSpec:
    """The JobSpec of ``--source PATH --skeletons`` (``common``: job, speed, rules, created)."""
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise ReplayError(f"--fps {args.fps} must be a positive rate")
    size = getattr(args, "size", None) or ""
    parse_size(size)
    camera = args.camera or _camera_name(first_camera(args.source))
    fps = args.fps or card_fps(getattr(args, "action_model", None))
    return JobSpec(camera=camera, source="skeletons", target="action", path=str(Path(args.source).resolve()),
                   fps=fps, t0=now, size=size, **common)


def _camera_name(text: str) -> str:
    """``text`` as a camera id (letters, digits, '_', '.', '-'; no '~')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text).lstrip("-_.")[:48] or "skeletons"
