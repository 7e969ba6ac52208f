"""The pose worker's imperfections, measured on its own detections of real video, and given
to clean skeletons (:mod:`workers.offline.stgcn.skeletonsets`).

:func:`measure` reads MoveNet's raw output cached per URFD clip
(``actionstream pose detections``, ``<camera>.npz``) with URFD's per-frame posture
labels (-1 upright, 0 falling, 1 lying) and keeps, per posture:

* ``miss``: the share of frames where nobody is detected (no person at the worker's
  threshold), and ``miss_run``: the mean length of such runs (misses come in runs: a person
  on the floor is lost for several frames), for a two-state Markov chain;
* ``joint_scores``: quantiles of each COCO-17 joint's raw score in the best person (a
  score under the worker's keypoint threshold is a joint missed by pose);
* ``person_scores``: quantiles of the best person's score;

and, over every frame where the person is at rest, ``jitter``: each joint's frame-to-frame
noise as a fraction of the body's size (the robust spread of the second difference in time,
which for white noise of deviation s is s * sqrt(1.5): slow motion at rest cancels out).

:func:`apply` draws from them: a clean clip's COCO-17 pixels (seen flag 1, 0.5 for a joint
only guessed, 0 outside the frame) and its posture per frame become, per frame, the
:class:`~shared.skeleton.Person` list the worker's decoder would give (none in a missed
frame), in OpenPose-18 as the MoveNet adapter maps it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from shared.skeleton import Person, box_from_keypoints, coco17_to_openpose18

log = logging.getLogger(__name__)

POSTURES = (-1, 0, 1)  # URFD labels: upright, falling, lying
QUANTILES = np.linspace(0.0, 1.0, 21)
REST = 0.01  # the body centre moves less than 1 % of the body's size per frame


@dataclass
class Imperfections:
    """Measured figures (see the module doc); lists for JSON, indexed by POSTURES' order."""

    miss: list[float]
    miss_run: list[float]
    joint_scores: list[list[list[float]]]  # (posture, 17, len(QUANTILES))
    person_scores: list[list[float]]  # (posture, len(QUANTILES))
    jitter: list[float]  # (17,) fraction of the body's size
    frames: list[int]  # frames measured per posture
    keypoint_threshold: float
    person_threshold: float

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Imperfections":
        return cls(**json.loads(Path(path).read_text()))


def _runs(flags: np.ndarray) -> list[int]:
    """Lengths of the runs of True in ``flags``."""
    out, n = [], 0
    for f in flags:
        if f:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out + ([n] if n else [])


def _best_rows(z) -> tuple[np.ndarray, np.ndarray]:
    """Per frame the best-scoring row of a cached clip: ((frames, 17, 3) y, x, score in
    tensor units, (frames,) person score)."""
    rows = z["rows"]
    best = rows[np.arange(len(rows)), rows[:, :, 55].argmax(axis=1)]
    return best[:, :51].reshape(-1, 17, 3), best[:, 55]


def body_size(xy: np.ndarray, seen: np.ndarray) -> float:
    """Diagonal of the box around the seen joints (pixels), 0 with fewer than 2."""
    if seen.sum() < 2:
        return 0.0
    p = xy[seen]
    return float(np.linalg.norm(p.max(axis=0) - p.min(axis=0)))


def jitter_residuals(xy: np.ndarray, seen: np.ndarray) -> list[list[float]]:
    """Per joint, the second differences in time (fractions of the body's size) over the
    frames where the joint is seen in three consecutive frames and the body is at rest."""
    out: list[list[float]] = [[] for _ in range(xy.shape[1])]
    for t in range(1, len(xy) - 1):
        both = seen[t - 1] & seen[t] & seen[t + 1]
        size = body_size(xy[t], seen[t])
        if both.sum() < 5 or size < 20:
            continue
        centre = [xy[k][both].mean(axis=0) for k in (t - 1, t + 1)]
        if np.linalg.norm(centre[1] - centre[0]) / 2 > REST * size:
            continue
        r = (xy[t] - (xy[t - 1] + xy[t + 1]) / 2) / size
        for j in np.flatnonzero(both):
            out[j].extend(r[j].tolist())
    return out


def _spread(values: list[float]) -> float:
    """White-noise deviation from second differences: 1.4826 * MAD / sqrt(1.5)."""
    v = np.asarray(values)
    if len(v) < 10:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))) / np.sqrt(1.5))


def measure(det_dir: str | Path, labels: dict[str, list[int]], person_threshold: float,
            keypoint_threshold: float) -> Imperfections:
    """Imperfections from the cached URFD clips of ``det_dir`` (``urfd-<clip>.npz``) and their
    per-frame labels ``{clip: [label per frame]}`` (see the module doc)."""
    scores = {p: [] for p in POSTURES}
    persons = {p: [] for p in POSTURES}
    missed = {p: [] for p in POSTURES}
    runs = {p: [] for p in POSTURES}
    residuals: list[list[float]] = [[] for _ in range(17)]
    for clip, lab in sorted(labels.items()):
        path = Path(det_dir) / f"urfd-{clip}.npz"
        if not path.is_file():
            continue
        z = np.load(path)
        kp, pscore = _best_rows(z)
        tw, th = (int(v) for v in z["tensor"])
        lab = np.asarray((list(lab) + [lab[-1]] * len(kp))[: len(kp)])
        found = pscore >= person_threshold
        for p in POSTURES:
            sel = lab == p
            missed[p].extend((~found[sel]).tolist())
            runs[p].extend(_runs(~found & sel))
            scores[p].append(kp[sel & found, :, 2])
            persons[p].extend(pscore[sel & found].tolist())
        seen = (kp[:, :, 2] >= keypoint_threshold) & found[:, None]
        for j, r in enumerate(jitter_residuals(kp[:, :, 1::-1] * [tw, th], seen)):
            residuals[j].extend(r)
    if not any(missed[p] for p in POSTURES):
        raise ValueError(f"no cached URFD clip (urfd-<clip>.npz) in {det_dir}")
    return Imperfections(
        miss=[float(np.mean(missed[p])) if missed[p] else 0.0 for p in POSTURES],
        miss_run=[float(np.mean(runs[p])) if runs[p] else 1.0 for p in POSTURES],
        joint_scores=[np.quantile(np.concatenate(scores[p]), QUANTILES, axis=0).T.round(4).tolist()
                      for p in POSTURES],
        person_scores=[np.quantile(persons[p], QUANTILES).round(4).tolist() for p in POSTURES],
        jitter=[round(_spread(r), 5) for r in residuals],
        frames=[len(missed[p]) for p in POSTURES],
        keypoint_threshold=keypoint_threshold, person_threshold=person_threshold)


def _draw(quantiles: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One sample of each distribution given by its quantiles (``(..., len(QUANTILES))``,
    linear between them)."""
    q = np.asarray(quantiles)
    pos = rng.uniform(0.0, 1.0, q.shape[:-1]) * (len(QUANTILES) - 1)
    lo = np.minimum(pos.astype(int), len(QUANTILES) - 2)
    frac = pos - lo
    a = np.take_along_axis(q, lo[..., None], -1)[..., 0]
    b = np.take_along_axis(q, lo[..., None] + 1, -1)[..., 0]
    return a + frac * (b - a)


def miss_frames(postures: np.ndarray, imp: Imperfections, rng: np.random.Generator) -> np.ndarray:
    """Per frame, whether nobody is detected: a two-state chain whose stationary share and
    mean run length are the measured ones for each frame's posture."""
    out = np.zeros(len(postures), bool)
    state = False
    for t, p in enumerate(postures):
        k = POSTURES.index(int(p))
        rate, run = min(imp.miss[k], 0.95), max(imp.miss_run[k], 1.0)
        leave = 1.0 / run
        enter = min(1.0, rate / max(1e-9, 1.0 - rate) * leave)
        state = rng.random() < (1.0 - leave if state else enter)
        out[t] = state
    return out


def apply(coco: np.ndarray, postures: np.ndarray, imp: Imperfections,
          rng: np.random.Generator, min_joints: int = 4) -> list[list[Person]]:
    """Clean ``coco`` (frames, 17, 3: x, y pixels, seen 1 / guessed 0.5 / unseen 0) with its
    per-frame ``postures`` (URFD labels) -> per frame the people the worker's decoder gives:
    jittered joints (a seen-flag 0.5 joint scores in the lower half), missed joints dropped,
    nobody in missed frames or where fewer than ``min_joints`` joints remain."""
    missed = miss_frames(postures, imp, rng)
    jitter = np.asarray(imp.jitter)
    joint_q, person_q = np.asarray(imp.joint_scores), np.asarray(imp.person_scores)
    out: list[list[Person]] = []
    for t in range(len(coco)):
        k = POSTURES.index(int(postures[t]))
        xy, flag = coco[t, :, :2], coco[t, :, 2]
        size = body_size(xy, flag > 0)
        if missed[t] or size <= 0:
            out.append([])
            continue
        score = _draw(joint_q[k], rng)
        score = np.where(flag >= 1.0, score, np.where(flag > 0, score * 0.5, 0.0))
        keep = score >= imp.keypoint_threshold
        if keep.sum() < min_joints:
            out.append([])
            continue
        noisy = xy + rng.normal(0.0, 1.0, xy.shape) * jitter[:, None] * size
        kp = np.concatenate([noisy, score[:, None]], axis=1).astype(np.float32)
        kp[~keep] = 0.0
        op = coco17_to_openpose18(kp)
        box = box_from_keypoints(op)
        pad = 0.08 * (box[2:] - box[:2])
        box = np.concatenate([box[:2] - pad, box[2:] + pad])
        pscore = float(_draw(person_q[k], rng))
        out.append([Person(op, box, max(pscore, imp.person_threshold))])
    return out


def load_urfd_labels(path: str | Path) -> dict[str, list[int]]:
    """URFD ``labels.csv`` -> ``{clip: [label per frame, 0-based]}``."""
    import csv

    frames: dict[str, dict[int, int]] = {}
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if len(row) >= 3:
                frames.setdefault(row[0].strip(), {})[int(row[1]) - 1] = int(row[2])
    return {c: [f.get(i, -1) for i in range(max(f) + 1)] for c, f in frames.items()}


def describe(imp: Imperfections, name: Optional[str] = None) -> str:
    """A few lines of the figures, for logs and reports."""
    names = ("upright", "falling", "lying")
    lines = [f"imperfections{' of ' + name if name else ''} (frames {dict(zip(names, imp.frames))}):"]
    for k, p in enumerate(names):
        js = np.asarray(imp.joint_scores[k])
        lost = [float(np.interp(imp.keypoint_threshold, js[j], QUANTILES)) for j in range(17)]
        lines.append(f"  {p}: nobody in {imp.miss[k]:.1%} of frames (runs of {imp.miss_run[k]:.1f}), "
                     f"joints missed {np.mean(lost):.1%} (max {max(lost):.1%})")
    lines.append(f"  jitter (x body size): median {np.median(imp.jitter):.4f}, "
                 f"max {max(imp.jitter):.4f}")
    return "\n".join(lines)
