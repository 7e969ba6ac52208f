"""The "still down" watch: after a ``falling`` event, a track that stays on the floor (or
vanishes there) for ``fallen_after_s`` seconds of source time raises ``fallen``.

Pure (no I/O, no clock): :class:`StillDown` is told of each ``falling`` event
(:meth:`StillDown.arm`) and of every frame of the camera, in seq order, with each present
track's posture (:meth:`StillDown.observe`); it answers with the tracks whose time is up.
A track that is *upright* in frames spanning ``getup_s`` seconds (no *lying* frame in
between) has got up: its watch ends and nothing more is raised. A track that is absent
(the lying person is often not detected, or the track ended) keeps its watch running.

Posture, :func:`posture`, from one skeleton (OpenPose-18 keypoints in pixels):

* torso angle: the angle from vertical of the line from the mid-hip to the mid-shoulder
  (either side where only one is seen), 0° upright, 90° horizontal, 180° head down;
* aspect: the width / height of the box around the seen keypoints.

``lying`` when the angle is at least ``LYING_ANGLE`` (45°) or the aspect at least
``LYING_ASPECT`` (1.2); ``upright`` when the angle is at most ``UPRIGHT_ANGLE`` (35°) and the
aspect below ``UPRIGHT_ASPECT`` (0.8); else (sitting, crouching, too few joints) ``None``.
Measured on every URFD frame labelled upright (-1, 928 frames) or lying (1, 641 frames)
where MoveNet (person threshold 0.1, the best-scoring person) finds someone:
``lying`` on 97.5 % of lying frames and 0.2 % of upright ones; ``upright`` on 98.6 % of
upright frames and 0.2 % of lying ones (``python tests/benchmarks/posture_figures.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np

from shared.skeleton import Person

log = logging.getLogger(__name__)

LYING, UPRIGHT = "lying", "upright"
LYING_ANGLE, LYING_ASPECT = 45.0, 1.2
UPRIGHT_ANGLE, UPRIGHT_ASPECT = 35.0, 0.8
_SHOULDERS, _HIPS = (2, 5), (8, 11)  # OpenPose-18 r/l shoulder, r/l hip


def _mid(kp: np.ndarray, joints: tuple[int, int]) -> Optional[np.ndarray]:
    seen = [kp[j, :2] for j in joints if kp[j, 2] > 0]
    return np.mean(seen, axis=0) if seen else None


def torso_angle(kp: np.ndarray) -> Optional[float]:
    """Degrees from vertical of mid-hip -> mid-shoulder (0 upright, 90 flat), or None."""
    shoulders, hips = _mid(kp, _SHOULDERS), _mid(kp, _HIPS)
    if shoulders is None or hips is None:
        return None
    dx, dy = shoulders - hips
    if dx == 0 and dy == 0:
        return None
    return math.degrees(math.atan2(abs(float(dx)), -float(dy)))


def aspect(kp: np.ndarray) -> Optional[float]:
    """Width / height of the box around the seen keypoints (None: fewer than 2 seen)."""
    seen = kp[:, 2] > 0
    if seen.sum() < 2:
        return None
    xs, ys = kp[seen, 0], kp[seen, 1]
    return float(xs.max() - xs.min()) / max(1e-6, float(ys.max() - ys.min()))


def posture(person: Person) -> Optional[str]:
    """``LYING``, ``UPRIGHT`` or None (undecided) for one skeleton; see the module doc."""
    kp = np.asarray(person.keypoints, dtype=np.float64)
    angle, ratio = torso_angle(kp), aspect(kp)
    if (angle is not None and angle >= LYING_ANGLE) or (ratio is not None and ratio >= LYING_ASPECT):
        return LYING
    if angle is not None and angle <= UPRIGHT_ANGLE and ratio is not None and ratio < UPRIGHT_ASPECT:
        return UPRIGHT
    return None


@dataclass(frozen=True)
class Fallen:
    """A watch whose time is up: raise ``fallen`` for (camera, track) at frame ``seq``."""

    camera: str
    track_id: int
    armed_seq: int  # frame_end of the falling event
    armed_ts: float
    seq: int
    ts: float
    lying_share: float  # of the frames the track was seen in since the falling event


@dataclass
class _Watch:
    armed_seq: int
    armed_ts: float
    upright_since: Optional[float] = None  # ts of the first upright frame of the current run
    seen: int = 0
    lying: int = 0

    def to_list(self) -> list:
        return [self.armed_seq, self.armed_ts, self.upright_since, self.seen, self.lying]


class StillDown:
    """Per-(camera, track) watches; see the module doc. ``fallen_after_s`` and ``getup_s``
    are source seconds."""

    def __init__(self, fallen_after_s: float = 10.0, getup_s: float = 1.0) -> None:
        if not fallen_after_s > 0 or not getup_s >= 0:
            raise ValueError(f"fallen_after_s ({fallen_after_s}) must be > 0 and getup_s "
                             f"({getup_s}) >= 0")
        self.fallen_after_s, self.getup_s = float(fallen_after_s), float(getup_s)
        self._watches: dict[str, dict[int, _Watch]] = {}

    def arm(self, camera: str, track_id: int, seq: int, ts: float) -> None:
        """A ``falling`` event for the track ended at frame ``seq`` (time ``ts``): watch it
        (a watch already running keeps its start)."""
        watches = self._watches.setdefault(camera, {})
        if track_id not in watches:
            watches[track_id] = _Watch(int(seq), float(ts))
            log.debug("camera %s track %d: watching for still down from seq %d", camera,
                      track_id, seq)

    def observe(self, camera: str, seq: int, ts: float,
                postures: Mapping[int, Optional[str]]) -> list[Fallen]:
        """One frame of ``camera`` after the frames before it: the posture of each track
        present in it. Returns the watches whose time is up (they end)."""
        watches = self._watches.get(camera)
        if not watches:
            return []
        out = []
        for tid, watch in list(watches.items()):
            if seq <= watch.armed_seq:
                continue
            if tid in postures and self._got_up(watch, postures[tid], ts):
                log.info("camera %s track %d: up again at seq %d; no fallen alert", camera, tid, seq)
                del watches[tid]
            elif ts - watch.armed_ts >= self.fallen_after_s:
                out.append(Fallen(camera, tid, watch.armed_seq, watch.armed_ts, int(seq), float(ts),
                                  watch.lying / watch.seen if watch.seen else 0.0))
                del watches[tid]
        return out

    def _got_up(self, watch: _Watch, pose: Optional[str], ts: float) -> bool:
        watch.seen += 1
        if pose == LYING:
            watch.lying += 1
            watch.upright_since = None
        elif pose == UPRIGHT:
            if watch.upright_since is None:
                watch.upright_since = ts
            return ts - watch.upright_since >= self.getup_s
        return False

    def watching(self, camera: str) -> list[int]:
        return sorted(self._watches.get(camera, {}))

    def forget_camera(self, camera: str) -> None:
        self._watches.pop(camera, None)

    # -- takeover ----------------------------------------------------------------------
    def state(self, camera: str) -> dict:
        return {str(t): w.to_list() for t, w in self._watches.get(camera, {}).items()}

    def load(self, camera: str, state: Mapping[str, Iterable]) -> None:
        watches = {}
        for key, (seq, ts, since, seen, lying) in state.items():
            watches[int(key)] = _Watch(int(seq), float(ts), None if since is None else float(since),
                                       int(seen), int(lying))
        self._watches[camera] = watches
