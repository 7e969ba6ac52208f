"""Per-camera multi-person tracker: skeletons of one frame in, stable track ids out.

Pure and deterministic (numpy + scipy, no I/O). One :class:`Tracker` per camera, fed
every frame in order. Each frame:

1. **Predict.** Every track shifts its last box and keypoints by its box-centre velocity
   (constant-velocity model; the velocity is an exponential average of the measured
   centre motion and decays by ``velocity_damping`` in every frame the track is missed).
2. **Match** (ByteTrack's two thresholds). Detections scoring below ``low_score`` are
   dropped; *strong* ones score ``high_score`` or more, the rest are *weak*. Similarity of
   track ``t`` and detection ``d`` is ``oks_weight * OKS + (1 - oks_weight) * IoU`` (IoU
   alone when fewer than ``min_common_joints`` joints are seen in both), taken against the
   predicted pose and against the last seen one, whichever is higher (a noisy velocity,
   e.g. from one jumpy detection before a gap, must not lose a slow person). Pairs below
   ``match_threshold`` are never matched; the rest are assigned by
   ``scipy.optimize.linear_sum_assignment`` on ``1 - similarity``, in three rounds:
   confirmed tracks take strong detections; the confirmed tracks left whose best score
   reached ``hold_ratio * high_score`` take weak ones; tentative tracks take the strong ones
   left. So a new tentative track cannot steal the detection of a returning confirmed track,
   and a weak detection (a person lying on the floor scores low) only extends a track that
   was once seen clearly: it never starts or confirms one, and is dropped when unmatched.
3. **Birth / death.** An unmatched strong detection starts a tentative track; it is confirmed
   (and only then given an id: 1, 2, 3, ... never reused) at its ``min_hits``-th
   consecutive hit; a miss before that drops it silently. A confirmed track coasts on its
   motion model through up to ``max_misses`` consecutive misses (it is not reported while
   missed, and keeps its id when it reappears); the next miss ends it and frees its state,
   and its id is reported in ``TrackUpdate.ended``.

:meth:`Tracker.to_state` / :meth:`Tracker.from_state` carry the whole state exactly (JSON),
so a tracker resumed from it continues bit for bit (takeovers give the same ids).

A fall (tall box becoming wide in ~10-20 frames) keeps its id: per frame the box and
the joints change little, the centre velocity follows the downward motion, and the
OKS scale grows with the box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from shared.skeleton import NUM_JOINTS, Person

log = logging.getLogger(__name__)

_MIN_AREA = 16.0 ** 2  # floor of the OKS scale s**2: tight boxes around 1-2 joints are tiny


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker parameters; the defaults suit 10-30 fps video of whole bodies.

    ``oks_kappa`` is one per-joint tolerance for all joints (a joint displaced by about
    ``1.2 * kappa * sqrt(box area)`` scores 0.5), looser than COCO's evaluation sigmas
    because consecutive frames of fast motion, not annotation noise, are compared.
    """

    high_score: float = 0.0          # detections scoring at least this start and extend tracks
    low_score: float = 0.0           # weaker ones down to this only extend confirmed tracks ...
    hold_ratio: float = 1.25         # ... whose best score reached hold_ratio * high_score
    min_hits: int = 3                # consecutive hits before a track is confirmed
    max_misses: int = 15             # consecutive misses a confirmed track survives
    match_threshold: float = 0.2     # similarity gate, 0..1
    oks_weight: float = 0.5          # share of OKS in the similarity; IoU has the rest
    oks_kappa: float = 0.2           # per-joint tolerance, relative to sqrt(box area)
    min_keypoint_conf: float = 0.05  # a joint counts as seen above this confidence
    min_common_joints: int = 3       # fewer joints seen in both: IoU alone
    velocity_smoothing: float = 0.7  # weight of the old velocity when a new one is measured
    velocity_damping: float = 0.9    # velocity factor per missed frame

    def __post_init__(self) -> None:
        if self.min_hits < 1 or self.max_misses < 0:
            raise ValueError("min_hits must be >= 1 and max_misses >= 0")
        if self.min_common_joints < 1:
            raise ValueError("min_common_joints must be >= 1")
        for name in ("match_threshold", "oks_weight", "min_keypoint_conf",
                     "velocity_smoothing", "velocity_damping"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.oks_kappa <= 0:
            raise ValueError("oks_kappa must be > 0")
        if self.hold_ratio < 1.0:
            raise ValueError(f"hold_ratio must be >= 1, got {self.hold_ratio}")
        if not 0.0 <= self.low_score <= self.high_score:
            raise ValueError(f"need 0 <= low_score <= high_score, got {self.low_score}, {self.high_score}")


@dataclass(frozen=True)
class TrackUpdate:
    """What one :meth:`Tracker.update` returns.

    ``people``: the confirmed tracks seen in this frame, each the detection with its
    ``track_id``, sorted by id. ``ended``: ids of confirmed tracks that ended in this
    frame (never seen again; their state is freed), ascending.
    """

    people: list[Person]
    ended: tuple[int, ...] = ()


@dataclass(eq=False)
class _Track:
    """Mutable state of one track. ``box`` (4,) and ``keypoints`` (18, 3) are the
    prediction for the current frame, ``seen_box`` (4,) and ``seen_keypoints`` (18, 3)
    the last matched detection; ``velocity`` (2,) is the box centre's motion in px/frame."""

    box: np.ndarray
    keypoints: np.ndarray
    seen_box: np.ndarray
    seen_keypoints: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    peak: float = 0.0  # best detection score so far
    hits: int = 1
    misses: int = 0
    track_id: int = -1  # -1 while tentative

    @property
    def confirmed(self) -> bool:
        return self.track_id > 0


STATE_VERSION = 1
_ARRAYS = {"box": (4,), "keypoints": (NUM_JOINTS, 3), "seen_box": (4,), "seen_keypoints": (NUM_JOINTS, 3),
           "velocity": (2,)}


def _track_state(t: _Track) -> dict:
    state = {name: getattr(t, name).tolist() for name in _ARRAYS}
    state.update(peak=t.peak, hits=t.hits, misses=t.misses, track_id=t.track_id)
    return state


def _track_from_state(state: dict) -> _Track:
    arrays = {}
    for name, shape in _ARRAYS.items():
        a = np.array(state[name], np.float32)
        if a.shape != shape or not np.isfinite(a).all():
            raise ValueError(f"track {name} must be {shape} finite numbers")
        arrays[name] = a
    return _Track(**arrays, peak=float(state["peak"]), hits=int(state["hits"]), misses=int(state["misses"]),
                  track_id=int(state["track_id"]))


def _centre(box: np.ndarray) -> np.ndarray:
    """Centres ``(..., 2)`` of boxes ``(..., 4)``."""
    return (box[..., :2] + box[..., 2:]) / 2


def _area(box: np.ndarray) -> np.ndarray:
    """Areas ``(...)`` of boxes ``(..., 4)``; degenerate boxes have area 0."""
    wh = np.clip(box[..., 2:] - box[..., :2], 0.0, None)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(A, B)`` of boxes ``a`` ``(A, 4)`` and ``b`` ``(B, 4)``."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=-1)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def similarity(track_boxes: np.ndarray, track_kps: np.ndarray, det_boxes: np.ndarray,
               det_kps: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
    """Similarity ``(T, D)`` in [0, 1] of tracks and detections.

    ``track_boxes`` ``(T, 4)``, ``track_kps`` ``(T, 18, 3)``, ``det_boxes`` ``(D, 4)``,
    ``det_kps`` ``(D, 18, 3)``. OKS is averaged over the joints seen in both, with scale
    ``s**2`` = the mean of the two box areas; IoU alone where too few joints are shared.
    """
    iou = box_iou(track_boxes, det_boxes)
    conf = cfg.min_keypoint_conf
    seen = (track_kps[:, None, :, 2] > conf) & (det_kps[None, :, :, 2] > conf)
    d2 = np.sum((track_kps[:, None, :, :2] - det_kps[None, :, :, :2]) ** 2, axis=-1)  # (T, D, J)
    s2 = np.maximum((_area(track_boxes)[:, None] + _area(det_boxes)[None, :]) / 2, _MIN_AREA)
    per_joint = np.exp(-d2 / (2.0 * s2[..., None] * cfg.oks_kappa ** 2))
    common = seen.sum(axis=-1)
    oks = np.where(seen, per_joint, 0.0).sum(axis=-1) / np.maximum(common, 1)
    combined = cfg.oks_weight * oks + (1.0 - cfg.oks_weight) * iou
    return np.where(common >= cfg.min_common_joints, combined, iou)


def _assign(sim: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Optimal pairs ``(row, col)`` of ``sim`` ``(T, D)``, none below ``threshold``."""
    if sim.size == 0:
        return []
    gated = sim >= threshold
    cost = np.where(gated, 1.0 - sim, 1e6)  # gated-out pairs only when nothing else fits
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if gated[r, c]]


class Tracker:
    """Tracks the people of one camera; see the module docstring for the algorithm.

    ``update(people)`` once per frame, in order, returns a :class:`TrackUpdate`.
    """

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frames = 0
        self._ended_total = 0

    def update(self, people: Sequence[Person]) -> TrackUpdate:
        """Advance one frame with its detections ``people`` (any order, may be empty)."""
        cfg = self.config
        self._frames += 1
        self._predict()
        people = [p for p in people if p.score >= cfg.low_score]
        det_boxes = np.array([p.box for p in people], np.float32).reshape(-1, 4)
        det_kps = np.array([p.keypoints for p in people], np.float32).reshape(-1, NUM_JOINTS, 3)
        strong = [d for d, p in enumerate(people) if p.score >= cfg.high_score]
        weak = [d for d, p in enumerate(people) if p.score < cfg.high_score]
        confirmed = [i for i, t in enumerate(self._tracks) if t.confirmed]
        held = [i for i in confirmed if self._tracks[i].peak >= cfg.hold_ratio * cfg.high_score]
        tentative = [i for i, t in enumerate(self._tracks) if not t.confirmed]
        matched: dict[int, int] = {}  # index into self._tracks -> detection index
        # strong to confirmed tracks, then weak to the confirmed tracks left that were once seen
        # clearly, then strong to tentative ones: a weak detection never starts or confirms a track
        for rows, cols in ((confirmed, strong), (held, weak), (tentative, strong)):
            used = set(matched.values())
            rows = [i for i in rows if i not in matched]
            for r, c in self._match(rows, [d for d in cols if d not in used], det_boxes, det_kps):
                matched[r] = c
        out: list[Person] = []
        for i, d in matched.items():
            if self._hit(self._tracks[i], det_boxes[d], det_kps[d], people[d].score):
                out.append(people[d].with_track(self._tracks[i].track_id))
        ended = self._miss([t for i, t in enumerate(self._tracks) if i not in matched])
        used = set(matched.values())
        for d in strong:
            if d in used:
                continue
            t = _Track(det_boxes[d].copy(), det_kps[d].copy(), det_boxes[d].copy(), det_kps[d].copy(),
                       peak=people[d].score)
            self._tracks.append(t)
            if cfg.min_hits == 1:  # born confirmed
                out.append(people[d].with_track(self._confirm(t)))
        out.sort(key=lambda p: p.track_id)
        return TrackUpdate(out, ended)

    @property
    def next_id(self) -> int:
        """The id the next confirmed track gets."""
        return self._next_id

    def restore(self, people: Sequence[Person], next_id: int = 1) -> None:
        """Resume a camera another worker tracked: ``people`` (its last published frame,
        tracked) become confirmed tracks with their ids; new ids start at ``next_id`` or
        above every restored id, so ids are never reused across a takeover."""
        tracked = [p for p in people if p.track_id > 0]
        held = self.config.hold_ratio * self.config.high_score  # they were confirmed: may be held
        self._tracks = [
            _Track(p.box.copy(), p.keypoints.copy(), p.box.copy(), p.keypoints.copy(),
                   peak=max(p.score, held), hits=self.config.min_hits, track_id=p.track_id)
            for p in tracked
        ]
        self._next_id = max([next_id, *(p.track_id + 1 for p in tracked)])

    def finish(self) -> tuple[int, ...]:
        """End every track (end of stream, camera released); returns the confirmed ids."""
        ended = tuple(sorted(t.track_id for t in self._tracks if t.confirmed))
        self._ended_total += len(ended)
        self._tracks.clear()
        return ended

    def state(self) -> dict[str, int]:
        """Small JSON-ready summary for metrics."""
        confirmed = sum(t.confirmed for t in self._tracks)
        return {"tracks": confirmed, "tentative": len(self._tracks) - confirmed,
                "ids_issued": self._next_id - 1, "ended": self._ended_total, "frames": self._frames}

    def to_state(self) -> dict:
        """Everything the next :meth:`update` depends on, JSON-ready and exact: float32
        arrays become lists of Python floats (each float32 value is exactly a double, and JSON
        writes doubles exactly), so ``from_state(json.loads(json.dumps(to_state())))`` goes on
        bit for bit as this tracker would. The config is not included."""
        return {"version": STATE_VERSION, "next_id": self._next_id, "frames": self._frames,
                "ended": self._ended_total, "tracks": [_track_state(t) for t in self._tracks]}

    @classmethod
    def from_state(cls, state: dict, config: TrackerConfig = TrackerConfig()) -> "Tracker":
        """A tracker that continues exactly where the one that wrote ``state`` (:meth:`to_state`)
        stopped. Raises ValueError for a state of another version or shape."""
        try:
            if state["version"] != STATE_VERSION:
                raise ValueError(f"tracker state version {state['version']!r}, expected {STATE_VERSION}")
            tracker = cls(config)
            tracker._next_id, tracker._frames = int(state["next_id"]), int(state["frames"])
            tracker._ended_total = int(state["ended"])
            tracker._tracks = [_track_from_state(t) for t in state["tracks"]]
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"bad tracker state: {exc!r}") from None
        return tracker

    # -- steps ------------------------------------------------------------------------

    def _predict(self) -> None:
        """Shift every track's box and keypoints by its velocity (seen joints only)."""
        for t in self._tracks:
            t.box = t.box + np.tile(t.velocity, 2)
            seen = t.keypoints[:, 2] > 0
            t.keypoints[seen, :2] += t.velocity

    def _match(self, rows: list[int], cols: list[int], det_boxes: np.ndarray,
               det_kps: np.ndarray) -> list[tuple[int, int]]:
        """Assign tracks ``rows`` (indices into the track list) to detections ``cols``."""
        if not rows or not cols:
            return []
        tracks = [self._tracks[i] for i in rows]
        boxes, kps = det_boxes[cols], det_kps[cols]
        moved = similarity(np.stack([t.box for t in tracks]), np.stack([t.keypoints for t in tracks]),
                           boxes, kps, self.config)
        stayed = similarity(np.stack([t.seen_box for t in tracks]),
                            np.stack([t.seen_keypoints for t in tracks]), boxes, kps, self.config)
        sim = np.maximum(moved, stayed)  # a noisy velocity must not lose a slow track
        return [(rows[r], cols[c]) for r, c in _assign(sim, self.config.match_threshold)]

    def _hit(self, t: _Track, box: np.ndarray, kps: np.ndarray, score: float) -> bool:
        """Update ``t`` with its detection; True when it is (now) confirmed."""
        cfg = self.config
        measured = (_centre(box) - _centre(t.seen_box)) / (t.misses + 1)  # px/frame since the last match
        a = cfg.velocity_smoothing if t.hits > 1 else 0.0  # first measurement is taken whole
        t.velocity = (a * t.velocity + (1.0 - a) * measured).astype(np.float32)
        t.box, t.seen_box = box.copy(), box.copy()
        t.keypoints, t.seen_keypoints = kps.copy(), kps.copy()
        t.hits, t.misses, t.peak = t.hits + 1, 0, max(t.peak, score)
        if not t.confirmed and t.hits >= cfg.min_hits:
            self._confirm(t)
        return t.confirmed

    def _confirm(self, t: _Track) -> int:
        t.track_id, self._next_id = self._next_id, self._next_id + 1
        log.debug("track %d confirmed", t.track_id)
        return t.track_id

    def _miss(self, missed: list[_Track]) -> tuple[int, ...]:
        """Count a miss for each of ``missed``; drop tentative and expired tracks."""
        dead: set[int] = set()
        for t in missed:
            t.misses += 1
            t.velocity = (t.velocity * self.config.velocity_damping).astype(np.float32)
            if not t.confirmed or t.misses > self.config.max_misses:
                dead.add(id(t))
        ended = tuple(sorted(t.track_id for t in missed if id(t) in dead and t.confirmed))
        self._tracks = [t for t in self._tracks if id(t) not in dead]
        self._ended_total += len(ended)
        if ended:
            log.debug("tracks ended: %s", ended)
        return ended
