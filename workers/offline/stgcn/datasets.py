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

from shared.kinetics import ClipError, OPENPOSE_JOINTS  # noqa: F401  (raised and re-exported here)

log = logging.getLogger(__name__)

NUM_CHANNELS = 3  # x, y, confidence


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


# -- NTU RGB+D ------------------------------------------------------------------------------
NTU_JOINTS = 25
NTU_MAX_BODY = 2


def read_ntu_skeleton(path: str | os.PathLike, max_body: int = NTU_MAX_BODY,
                      num_joints: int = NTU_JOINTS) -> np.ndarray:
    """One NTU RGB+D ``.skeleton`` file -> float32 ``(3, T, V=25, M=max_body)`` = x, y, z.

    As the original ``tools/utils/ntu_read_skeleton.read_xyz``: T = the file's frame count,
    bodies beyond ``max_body`` are dropped, missing bodies stay zero. Raises ClipError.
    """
    path = Path(path)
    try:
        lines = path.read_text().split("\n")
        frames = _ntu_frames(lines)
    except (OSError, ValueError, IndexError) as exc:
        raise ClipError(f"{path}: not a readable NTU .skeleton file: {exc}") from None
    data = np.zeros((NUM_CHANNELS, len(frames), num_joints, max_body), dtype=np.float64)
    for t, bodies in enumerate(frames):
        for m, joints in enumerate(bodies[:max_body]):
            xyz = joints[:num_joints, :3]
            data[:, t, : xyz.shape[0], m] = xyz.T
    return data.astype(np.float32)


def _ntu_frames(lines: list[str]) -> list[list[np.ndarray]]:
    """Parse the text: per frame, per body, joints ``(V, 11)`` (x y z depthX depthY colorX
    colorY orientationW X Y Z); the 12th value (tracking state) is dropped."""
    pos = 0

    def take() -> str:
        nonlocal pos
        pos += 1
        return lines[pos - 1]

    frames = []
    for _ in range(int(take())):
        bodies = []
        for _ in range(int(take())):
            take()  # body info: id, clipped edges, hand states, lean, tracking state
            joints = [list(map(float, take().split()))[:11] for _ in range(int(take()))]
            bodies.append(np.asarray(joints, dtype=np.float64).reshape(-1, 11))
        frames.append(bodies)
    return frames


def read_label_json(path: str | os.PathLike) -> dict[str, tuple[str, int, bool]]:
    """The original tools' label JSON ``{clip: {"label", "label_index", "has_skeleton"}}`` ->
    ``{clip: (label, label_index, has_skeleton)}``; a clip name's ``_rgb`` suffix is also
    indexed without it (so ``.skeleton`` file stems find their label)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClipError(f"{path}: cannot read the label JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ClipError(f"{path}: a label JSON is an object keyed by clip name")
    out = {}
    for clip, info in raw.items():
        entry = (str(info["label"]), int(info["label_index"]), bool(info.get("has_skeleton", True)))
        out[clip] = entry
        if clip.endswith("_rgb"):
            out.setdefault(clip[:-4], entry)
    return out


def ntu_action(name: str) -> int:
    """The action class of an NTU clip name ``SsssCcccPpppRrrrAaaa`` (0-based: A001 -> 0)."""
    stem = Path(name).name.split(".")[0].removesuffix("_rgb")
    i = stem.find("A")
    if i < 0 or not stem[i + 1: i + 4].isdigit():
        raise ClipError(f"{name}: not an NTU clip name (SsssCcccPpppRrrrAaaa)")
    return int(stem[i + 1: i + 4]) - 1


def gendata(paths: list[Path], labels: list[int], out_dir: str | os.PathLike, part: str,
            reader=None, window: int = 300, num_joints: int = OPENPOSE_JOINTS,
            num_person: int = 2) -> tuple[Path, Path]:
    """The original ``*_gendata.py``: clips -> ``{part}_data.npy`` (a memory-mapped float32
    ``(N, 3, window, V, M)``, clips cut or zero-padded at the end) and ``{part}_label.pkl``
    (``(sample_names, labels)``, the original's pickle) + ``{part}_label.json``.

    ``reader(path) -> (3, T, V, M)`` array (default: :func:`read_kinetics_json`).
    """
    import pickle

    from numpy.lib.format import open_memmap

    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} clips but {len(labels)} labels")
    reader = reader or (lambda p: read_kinetics_json(p, window=window, num_joints=num_joints,
                                                     num_person_out=num_person)[0])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path, label_path = out_dir / f"{part}_data.npy", out_dir / f"{part}_label.pkl"
    fp = open_memmap(data_path, dtype="float32", mode="w+",
                     shape=(len(paths), NUM_CHANNELS, window, num_joints, num_person))
    for i, path in enumerate(paths):
        clip = reader(path)[:, :window]
        fp[i, :, : clip.shape[1], :, : clip.shape[3]] = clip[..., :num_person]
    fp.flush()
    del fp
    names = [Path(p).name for p in paths]
    with open(label_path, "wb") as fh:
        pickle.dump((names, [int(x) for x in labels]), fh)
    (out_dir / f"{part}_label.json").write_text(json.dumps(
        {"sample_name": names, "label": [int(x) for x in labels]}))
    log.info("gendata %s: %d clips -> %s", part, len(paths), data_path)
    return data_path, label_path


def load_gendata(data_path: str | os.PathLike,
                 label_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(data (N, 3, T, V, M) memory-mapped, labels (N,) int64, sample_names)``."""
    import pickle

    with open(label_path, "rb") as fh:
        names, labels = pickle.load(fh)
    data = np.load(data_path, mmap_mode="r")
    if data.shape[0] != len(labels):
        raise ClipError(f"{data_path}: {data.shape[0]} samples but {len(labels)} labels")
    return data, np.asarray(labels, dtype=np.int64), list(names)
