"""UP-Fall Detection clips: per-clip labels, and each fall's frame range derived from the
skeletons (the dataset labels whole clips only).

``labels.csv`` (``clip, activity, activity_name, class, frames, fps, width, height``):
activities 1-5 are falls, 6-11 daily activities (11 "laying" and 9 "picking up an object"
are the hard negatives). Camera ids are ``upfall-<clip>``, clips ``A01-S01-T1-C1``
(activity, subject, trial, camera); both cameras of a trial are one group in
cross-validation.

:func:`derive_fall` finds the fall in the subject's skeletons: the subject is the track
that moves most (a camera's static false detection does not move), continued by the
track that starts where it ended (the person on the floor); per frame its *down score*
is the larger of its descent (body centre below the standing one, in half standing
heights) and its torso's turn from upright (neck over mid-hip; 70 degrees counts as
down), each clipped to 0..1. The fall ends at the first frame from which the score stays
at or above 0.8 for half a second, and starts at the last frame before that with a score
at or below 0.2.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

CLIP_RE = re.compile(r"A(\d{2})-S(\d{2})-T(\d)-C(\d)")
FALL_ACTIVITIES = range(1, 6)
DOWN, UP = 0.8, 0.2  # down-score levels that end and start a fall
STAY_S = 0.5  # the score stays down this long after the fall's end
TURN_DEG = 70.0  # torso turn that counts as fully down
NECK, R_HIP, L_HIP = 1, 8, 11


@dataclass(frozen=True)
class UpFallClip:
    clip: str
    activity: int
    name: str
    fps: float

    @property
    def fall(self) -> bool:
        return self.activity in FALL_ACTIVITIES

    @property
    def group(self) -> str:
        """Activity + subject + trial: both cameras of one trial."""
        m = CLIP_RE.search(self.clip)
        return f"upfall-A{m.group(1)}-S{m.group(2)}-T{m.group(3)}" if m else f"upfall-{self.clip}"


def read_upfall_labels(path: str | Path) -> dict[str, UpFallClip]:
    """``labels.csv`` -> ``{clip: UpFallClip}``."""
    out = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            out[row["clip"]] = UpFallClip(row["clip"], int(row["activity"]),
                                          row["activity_name"], float(row["fps"]))
    return out


def _tracks(frames: Sequence) -> dict[int, list[tuple[int, object]]]:
    tracks: dict[int, list] = {}
    for skel in frames:
        for p in skel.people:
            if p.track_id > 0:
                tracks.setdefault(p.track_id, []).append((skel.seq, p))
    return tracks


def _centre(p) -> np.ndarray:
    seen = p.keypoints[:, 2] > 0
    return p.keypoints[seen, :2].mean(axis=0) if seen.any() else (p.box[:2] + p.box[2:]) / 2


def subject(frames: Sequence) -> list[tuple[int, object]]:
    """The subject's ``(seq, Person)`` in seq order: the track that moves most, followed by
    the tracks that start within a second of its end near where it ended."""
    if not frames:
        return []
    tracks = _tracks(frames)
    if not tracks:
        return []
    height = float(frames[0].height)

    def motion(rows):
        c = np.array([_centre(p) for _, p in rows])
        return float(np.abs(np.diff(c, axis=0)).sum()) / height if len(c) > 1 else 0.0

    best = max(tracks, key=lambda t: motion(tracks[t]))
    chain = list(tracks.pop(best))
    fps_gap = 30  # frames: about a second at the datasets' rates
    while True:
        end_seq, end_p = chain[-1]
        near = [t for t, rows in tracks.items() if end_seq < rows[0][0] <= end_seq + fps_gap and
                np.hypot(*(_centre(rows[0][1]) - _centre(end_p))) < 0.3 * height]
        if not near:
            return chain
        nxt = min(near, key=lambda t: tracks[t][0][0])
        chain.extend(tracks.pop(nxt))


def torso_turn(p) -> float:
    """Degrees between the torso (mid-hip to neck) and upright: 0 upright, 90 horizontal,
    180 head down; NaN without the neck or both hips."""
    k = p.keypoints
    hips = [k[j, :2] for j in (R_HIP, L_HIP) if k[j, 2] > 0]
    if k[NECK, 2] <= 0 or not hips:
        return float("nan")
    d = k[NECK, :2] - np.mean(hips, axis=0)
    return float(np.degrees(np.arctan2(abs(d[0]), -d[1])))


def down_score(chain: list[tuple[int, object]], height: float) -> tuple[np.ndarray, np.ndarray]:
    """``(seqs, score)`` of the subject chain (see the module doc), score median-filtered
    over 3 frames."""
    if not chain:
        return np.zeros(0, np.int64), np.zeros(0)
    seqs = np.array([s for s, _ in chain])
    cy = np.array([_centre(p)[1] for _, p in chain]) / height
    tall = np.array([(p.box[3] - p.box[1]) for _, p in chain]) / height
    n0 = min(10, len(chain))
    y0, h0 = float(np.median(cy[:n0])), max(float(np.median(tall[:n0])), 0.05)
    turn = np.nan_to_num(np.array([torso_turn(p) for _, p in chain]), nan=0.0)
    score = np.maximum(np.clip((cy - y0) / (0.5 * h0), 0, 1), np.clip(turn / TURN_DEG, 0, 1))
    if len(score) >= 3:
        padded = np.pad(score, 1, mode="edge")
        score = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    return seqs, score


def derive_fall(frames: Sequence, fps: float) -> Optional[tuple[int, int]]:
    """The fall's ``(first, last)`` seq in a clip known to hold one, or None when the
    subject never stays down (see the module doc)."""
    chain = subject(frames)
    if len(chain) < 5:
        return None
    seqs, score = down_score(chain, float(frames[0].height))
    stay = max(1, int(round(STAY_S * fps)))
    end = next((i for i in range(len(score)) if score[i] >= DOWN and
                np.median(score[i:i + stay]) >= DOWN), None)
    if end is None or end == 0:
        return None
    before = np.flatnonzero(score[:end] <= UP)
    start = int(before[-1]) if len(before) else 0
    return int(seqs[start]), int(seqs[end])


# -- contact sheets: the derived ranges checked by eye ---------------------------------------
def contact_sheet(video: str | Path, frames: Sequence, fall: Optional[tuple[int, int]],
                  out: str | Path, tiles: int = 16, tile_width: int = 240) -> Path:
    """A PNG of ``tiles`` frames of ``video`` around ``fall`` (every other frame from 8
    before its start), each with the subject's skeleton and its seq; frames inside the
    derived range framed red, the others grey."""
    import cv2

    from shared.skeleton import OPENPOSE_18

    chain = dict(subject(frames))
    first = max(0, (fall[0] if fall else 0) - 8)
    step = max(1, ((fall[1] if fall else tiles) + 8 - first) // tiles + 1)
    want = [first + i * step for i in range(tiles)]
    cap, images, seq = cv2.VideoCapture(str(video)), {}, 0
    while len(images) < len(want):
        ok, img = cap.read()
        if not ok:
            break
        if seq in want:
            images[seq] = img
        seq += 1
    cap.release()
    cells = []
    for s in want:
        img = images.get(s)
        if img is None:
            continue
        p = chain.get(s)
        if p is not None:
            k = p.keypoints
            for a, b in OPENPOSE_18.edges:
                if k[a, 2] > 0 and k[b, 2] > 0:
                    cv2.line(img, tuple(int(v) for v in k[a, :2]), tuple(int(v) for v in k[b, :2]),
                             (0, 255, 0), 2)
        inside = fall is not None and fall[0] <= s <= fall[1]
        cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1),
                      (0, 0, 255) if inside else (128, 128, 128), 12 if inside else 4)
        cv2.putText(img, f"{s}{' FALL' if inside else ''}", (14, 40), cv2.FONT_HERSHEY_SIMPLEX,
                    1.2, (0, 0, 255) if inside else (255, 255, 255), 3)
        h = int(img.shape[0] * tile_width / img.shape[1])
        cells.append(cv2.resize(img, (tile_width, h)))
    if not cells:
        raise ValueError(f"{video}: no frames read")
    cols = 4
    blank = np.zeros_like(cells[0])
    cells += [blank] * (-len(cells) % cols)
    sheet = np.vstack([np.hstack(cells[i:i + cols]) for i in range(0, len(cells), cols)])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet)
    return out
