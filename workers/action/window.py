"""Per-camera, per-track windows of normalised skeletons: the ST-GCN input, step by step.

A :class:`CameraWindows` receives a camera's :class:`~shared.schemas.Skeletons` in seq order
and keeps, for every tracked person, a ring buffer of its last ``window`` time steps, each
already in the ST-GCN contract's form (``(3, V, M)``: x/width - 0.5, y/height - 0.5,
confidence; joints with confidence 0 at x = y = 0). Person slot ``m = 0`` is the track
itself, slots ``1..M-1`` the other people of that frame, nearest first (by box centre).

**Time steps.** With ``fps`` (the model card's frame rate; the action worker always gives
it) a frame's step is ``floor(ts * fps + 0.5)`` of its source time ``ts``: a grid anchored
to absolute time, so a 10, 15, 25 or 30 fps camera gives the model the same seconds and a
worker taking a camera over computes the same steps. Of several frames on one step the
first (lowest seq) is kept, later ones are skipped. Steps a track misses between two of its
frames are filled by linear interpolation of its keypoints when the gap is at most
``max_gap_s`` (a joint missing at either end stays 0), and with zeros beyond that, as the
original ST-GCN feeder leaves frames without a skeleton at zero. A filled step carries the
seq and ts of the camera's first frame at or after it. Without ``fps`` (the training code's
old callers) a step is a source seq, and missed steps are zeros.

``window``, ``stride``, ``min_frames`` and ``max_idle`` count steps (at the card's fps when
``fps`` is given). A track missing for more than ``max_idle`` steps is closed and freed.

:meth:`CameraWindows.due` hands out :class:`WindowRef` s — each a snapshot of one window,
so that later frames cannot change it before it is classified — and
:meth:`CameraWindows.batch` stacks them into the model input ``(N, 3, T, V, M)``.

**Takeover.** :meth:`CameraWindows.state` is the small JSON-able part that cannot be
rebuilt from the skeleton stream (per track: steps since the last classification, whether
it was classified, its length and last step); :meth:`CameraWindows.restore` applies it to
windows rebuilt by pushing the processed tail of the stream (at least
:meth:`CameraWindows.tail_seconds` of it), so that the next window, its steps and its data
are exactly those the previous owner would have produced.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from shared.schemas import Skeletons
from shared.skeleton import NUM_JOINTS, Person

log = logging.getLogger(__name__)

CHANNELS = 3  # x, y, confidence
T_MULTIPLE = 4  # ST-GCN halves T twice; a dynamic-T model takes multiples of 4
_LOG_EVERY = 100  # ignored frames: log the first and then every 100th
DEFAULT_MAX_GAP_S = 0.5  # longest gap of a track filled by interpolation (time steps only)
STATE_VERSION = 1


def round_up(n: int, multiple: int = T_MULTIPLE) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-int(n) // multiple) * multiple


@dataclass(frozen=True)
class WindowRef:
    """One track's window, due for classification.

    ``frame_start``/``frame_end``: the first and last source seq it covers (inclusive);
    ``frames``: its length in time steps (at most the window; with frame steps it is
    ``frame_end - frame_start + 1``); ``seen``: the steps in which the track was actually
    present. ``data``: float32 ``(3, frames, V, M)``, the normalised window (a private
    copy). ``width``/``height``: the size of the window's last frame. ``run``: the
    producer's run of the camera's last frame (part of the event id).
    """

    camera: str
    track_id: int
    frame_start: int
    frame_end: int
    ts_start: float
    ts_end: float
    frames: int
    seen: int
    data: np.ndarray = field(repr=False, compare=False)
    width: int = 0
    height: int = 0
    run: str = ""

    @property
    def valid(self) -> int:
        """The number of valid (non-padding) frames: the window's length."""
        return self.frames
def normalise(person: Person, width: int, height: int) -> np.ndarray:
    """A person's keypoints in the ST-GCN contract's form: float32 ``(3, V)`` = (x, y, conf).

    x / width - 0.5, y / height - 0.5 (computed in float64, as the original feeder does);
    joints with confidence exactly 0 get x = y = 0.
    """
    kp = person.keypoints.astype(np.float64)
    out = np.empty((CHANNELS, NUM_JOINTS), dtype=np.float64)
    out[0] = kp[:, 0] / width - 0.5
    out[1] = kp[:, 1] / height - 0.5
    out[2] = kp[:, 2]
    missing = kp[:, 2] == 0
    out[0:2, missing] = 0.0
    return out.astype(np.float32)


def centre(person: Person) -> np.ndarray:
    """A person's position in pixels ``(2,)``: the box centre, else the neck, else the mean
    of the joints with confidence > 0, else the origin."""
    box = person.box
    if box[2] > box[0] or box[3] > box[1]:
        return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], dtype=np.float64)
    kp = person.keypoints
    if kp[1, 2] > 0:
        return kp[1, :2].astype(np.float64)
    seen = kp[:, 2] > 0
    return kp[seen, :2].mean(axis=0).astype(np.float64) if seen.any() else np.zeros(2)


def frame_slots(people: Sequence[Person], width: int, height: int,
                num_person: int) -> dict[int, np.ndarray]:
    """For every tracked person of one frame, its step ``(3, V, M)``: slot 0 the track,
    slots 1.. the other people (tracked or not) nearest first, zeros where there are fewer.

    Returns ``{track_id: (3, V, M) float32}``; a duplicated track id keeps its first person.
    """
    norm = [normalise(p, width, height) for p in people]
    centres = np.array([centre(p) for p in people]).reshape(len(people), 2)
    out: dict[int, np.ndarray] = {}
    for i, person in enumerate(people):
        tid = person.track_id
        if tid < 0:
            continue
        if tid in out:
            log.warning("track %d appears twice in one frame; the second is ignored", tid)
            continue
        step = np.zeros((CHANNELS, NUM_JOINTS, num_person), dtype=np.float32)
        step[:, :, 0] = norm[i]
        if num_person > 1 and len(people) > 1:
            dist = np.hypot(*(centres - centres[i]).T)
            dist[i] = np.inf
            order = np.argsort(dist, kind="stable")[: min(num_person - 1, len(people) - 1)]
            for m, j in enumerate(order, start=1):
                step[:, :, m] = norm[j]
        out[tid] = step
    return out


def interpolate(before: np.ndarray, after: np.ndarray, alpha: float) -> np.ndarray:
    """One step ``(3, V, M)`` a fraction ``alpha`` of the way from ``before`` to ``after``:
    joints (per person slot) present at both ends are interpolated, all others are 0."""
    both = (before[2] > 0) & (after[2] > 0)  # (V, M)
    mixed = (1.0 - alpha) * before.astype(np.float64) + alpha * after.astype(np.float64)
    return np.where(both[None], mixed, 0.0).astype(np.float32)


class _Track:
    """One track's ring buffer: ``buf`` float32 ``(3, window, V, M)``; step, seq, ts per step."""

    __slots__ = ("track_id", "buf", "steps", "seqs", "ts", "head", "count", "seen", "last_step",
                 "last_seq", "since", "classified", "width", "height")

    def __init__(self, track_id: int, window: int, num_person: int) -> None:
        self.track_id = track_id
        self.buf = np.zeros((CHANNELS, window, NUM_JOINTS, num_person), dtype=np.float32)
        self.steps = np.zeros(window, dtype=np.int64)
        self.seqs = np.zeros(window, dtype=np.int64)
        self.ts = np.zeros(window, dtype=np.float64)
        self.head = 0  # next write position
        self.count = 0  # steps held (<= window)
        self.seen = np.zeros(window, dtype=bool)
        self.last_step = -1  # last step the track was present in
        self.last_seq = -1  # the seq of that frame
        self.since = 0  # steps appended since the last classification
        self.classified = False
        self.width = self.height = 0  # size of the last frame the track was present in

    @property
    def window(self) -> int:
        return self.buf.shape[1]

    def order(self) -> np.ndarray:
        """Ring positions of the steps held, oldest first."""
        return (self.head - self.count + np.arange(self.count)) % self.window

    def append(self, data: Optional[np.ndarray], step: int, seq: int, ts: float,
               present: bool) -> None:
        """Write one time step (``data`` ``(3, V, M)``, or None for an all-zero step)."""
        h = self.head
        self.buf[:, h] = 0.0 if data is None else data
        self.steps[h], self.seqs[h], self.ts[h], self.seen[h] = step, seq, ts, present
        self.head = (h + 1) % self.window
        self.count = min(self.count + 1, self.window)
        self.since += 1

    def snapshot(self, camera: str, run: str = "") -> WindowRef:
        """A copy of the window held now, oldest step first."""
        order = self.order()
        self.since = 0
        self.classified = True
        return WindowRef(
            camera=camera, track_id=self.track_id,
            frame_start=int(self.seqs[order[0]]), frame_end=int(self.seqs[order[-1]]),
            ts_start=float(self.ts[order[0]]), ts_end=float(self.ts[order[-1]]),
            frames=int(self.count), seen=int(self.seen[order].sum()),
            data=self.buf[:, order],  # fancy indexing copies
            width=int(self.width), height=int(self.height), run=run,
        )


class CameraWindows:
    """All tracks' windows of one camera (frames must come from one camera, in seq order).

    ``window``: steps kept per track (the card's T); ``stride``: steps between two
    classifications of a track; ``min_frames``: a new track is first classified once it
    holds this many steps (then every ``stride``); ``max_idle``: a track missing for more
    steps than this is closed; ``num_person``: M. ``fps``: the time grid's rate (the
    card's fps), None for one step per source seq; ``max_gap_s``: the longest gap filled by
    interpolation on the time grid.
    """

    def __init__(self, window: int = 300, stride: int = 30, num_person: int = 2,
                 max_idle: int = 30, min_frames: int = 32, *, camera: str = "",
                 fps: Optional[float] = None, max_gap_s: float = DEFAULT_MAX_GAP_S) -> None:
        if window < 1 or stride < 1 or num_person < 1 or max_idle < 0:
            raise ValueError(f"window ({window}), stride ({stride}) and num_person ({num_person}) "
                             f"must be >= 1 and max_idle ({max_idle}) >= 0")
        if not 1 <= min_frames <= window:
            raise ValueError(f"min_frames ({min_frames}) must be within 1..window ({window})")
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps ({fps}) must be a positive number or None")
        if not max_gap_s >= 0:
            raise ValueError(f"max_gap_s ({max_gap_s}) must be >= 0")
        self.camera = camera
        self.window, self.stride, self.num_person = window, stride, num_person
        self.max_idle, self.min_frames = max_idle, min_frames
        self.fps = None if fps is None else float(fps)
        self.max_gap = 0 if fps is None else int(math.floor(max_gap_s * self.fps + 1e-9))
        self.tracks: dict[int, _Track] = {}
        self.last_seq = -1
        self.last_step = -1
        self.ignored = 0  # frames dropped: older or repeated seq, bad frame size
        self.merged = 0  # frames skipped because an earlier frame had their time step
        self.frames = 0  # frames accepted (a step each)
        self.run = ""  # the producer's run of the last frame accepted
        self._recent: deque = deque(maxlen=window + self.max_gap + 2)  # (step, seq, ts) of frames
        self._ended: list[int] = []
        self._flushed = False

    def step_of(self, skel: Skeletons) -> int:
        """The time step of a frame: its seq, or its source time on the ``fps`` grid."""
        if self.fps is None:
            return int(skel.seq)
        return int(math.floor(float(skel.ts) * self.fps + 0.5))

    def tail_seconds(self) -> Optional[float]:
        """Source seconds of processed frames a rebuild needs (None: ``window + max_gap + 1``
        frames, without ``fps``)."""
        return None if self.fps is None else (self.window + self.max_gap + 2) / self.fps

    # -- input -------------------------------------------------------------------------
    def push(self, skel: Skeletons) -> None:
        """Add one frame: every tracked person's step goes into its track's window."""
        if self.camera and skel.camera != self.camera:
            raise ValueError(f"camera {skel.camera!r}'s frame pushed to camera "
                             f"{self.camera!r}'s windows")
        self.camera = self.camera or skel.camera
        if skel.seq <= self.last_seq:
            if not self._flushed:
                self._ignore(skel, f"seq {skel.seq} is not after the last seq {self.last_seq}")
                return
            log.info("camera %s: seq %d after the end of the stream; windows start afresh",
                     self.camera, skel.seq)
            self.reset()
        if skel.width <= 0 or skel.height <= 0:
            self._ignore(skel, f"frame size {skel.width}x{skel.height} cannot normalise keypoints")
            return
        step = self.step_of(skel)
        if step <= self.last_step:
            if not self._flushed:
                self._skip(skel, step)
                return
            self.reset()
        self._flushed = False
        steps = frame_slots(skel.people, skel.width, skel.height, self.num_person)
        self._recent.append((step, int(skel.seq), float(skel.ts)))
        self._close_idle(step, steps)
        for tid, data in steps.items():
            track = self.tracks.get(tid)
            if track is None:
                track = self.tracks[tid] = _Track(tid, self.window, self.num_person)
                log.debug("camera %s track %d: new window at seq %d", self.camera, tid, skel.seq)
            self._extend(track, data, step, skel)
        self.last_seq, self.last_step = int(skel.seq), step
        self.run = skel.run
        self.frames += 1

    def _skip(self, skel: Skeletons, step: int) -> None:
        """A frame on a step already taken (a faster camera, jitter) or before it."""
        self.last_seq = int(skel.seq)
        if step == self.last_step:
            self.merged += 1
            log.debug("camera %s: frame seq %d shares step %d with an earlier frame; skipped",
                      self.camera, skel.seq, step)
        else:
            self._ignore(skel, f"its time {skel.ts:.3f} s is before the last frame's step")

    def _extend(self, track: _Track, data: np.ndarray, step: int, skel: Skeletons) -> None:
        """Append the track's step, filling the steps it missed since its last one."""
        gap = step - track.last_step - 1
        if track.last_step >= 0 and gap > 0:
            before = track.buf[:, (track.head - 1) % track.window].copy()
            lerp = gap + 1 <= self.max_gap
            last_ts = track.ts[(track.head - 1) % track.window]
            for k in range(max(0, gap - track.window), gap):  # only the last `window` matter
                s = track.last_step + 1 + k
                fill = interpolate(before, data, (k + 1) / (gap + 1)) if lerp else None
                seq, ts = self._fill_meta(s, k, gap, last_ts, skel.ts)
                track.append(fill, s, seq, ts, present=False)
        track.append(data, step, int(skel.seq), float(skel.ts), present=True)
        track.last_step, track.last_seq = step, int(skel.seq)
        track.width, track.height = int(skel.width), int(skel.height)

    def _fill_meta(self, step: int, k: int = 0, gap: int = 0, last_ts: float = 0.0,
                   ts: float = 0.0) -> tuple[int, float]:
        """The seq and ts of a filled step: without ``fps`` the step itself and a time
        interpolated between the track's two frames; on the time grid those of the
        camera's first frame at or after the step."""
        if self.fps is None:
            return step, float(last_ts + (ts - last_ts) * (k + 1) / (gap + 1))
        i = bisect.bisect_left(self._recent, (step, -1, -math.inf))
        if i < len(self._recent):
            return self._recent[i][1], self._recent[i][2]
        return self.last_seq, float(step / self.fps)

    def _ignore(self, skel: Skeletons, why: str) -> None:
        self.ignored += 1
        if self.ignored % _LOG_EVERY == 1:
            log.warning("camera %s: frame seq %d ignored: %s (%d frames ignored so far)",
                        self.camera, skel.seq, why, self.ignored)

    def _close_idle(self, step: int, present: dict[int, np.ndarray]) -> None:
        """Close the tracks that have been missing for more than ``max_idle`` steps at
        ``step`` (a present track whose gap was that long starts a fresh window)."""
        for tid, track in list(self.tracks.items()):
            missing = step - track.last_step - (1 if tid in present else 0)
            if missing > self.max_idle:
                del self.tracks[tid]
                self._ended.append(tid)
                log.debug("camera %s track %d: closed after %d missing steps (last seq %d)",
                          self.camera, tid, missing, track.last_seq)

    # -- output ------------------------------------------------------------------------
    def due(self) -> list[WindowRef]:
        """The windows to classify after the last push, each a snapshot.

        A track present in the last frame is due when it first holds ``min_frames`` steps,
        and then every ``stride`` steps (its window slides once it holds ``window`` steps).
        Calling it again before the next push returns nothing new.
        """
        refs = []
        for track in self.tracks.values():
            if track.last_step != self.last_step or track.since == 0:
                continue
            if (track.classified and track.since >= self.stride) or (
                    not track.classified and track.count >= self.min_frames):
                refs.append(track.snapshot(self.camera, self.run))
        return refs

    def flush(self) -> list[WindowRef]:
        """At the end of a stream: every track's window holding steps not yet classified
        (and at least ``min_frames`` steps). The next push, at any seq, starts afresh."""
        refs = [t.snapshot(self.camera, self.run) for t in self.tracks.values()
                if t.since > 0 and t.count >= self.min_frames]
        self._flushed = True
        return refs

    def ended(self) -> list[int]:
        """The track ids closed since the last call (their windows are freed)."""
        out, self._ended = self._ended, []
        return out

    def reset(self) -> None:
        """Close every track (reported by :meth:`ended`) and accept any seq next."""
        self._ended.extend(self.tracks)
        self.tracks.clear()
        self.last_seq = self.last_step = -1
        self._recent.clear()
        self._flushed = False

    def batch(self, refs: Sequence[WindowRef], pad_to: Optional[int] = None) -> np.ndarray:
        """The model input for ``refs``: float32 ``(N, 3, T, V, M)``, see :func:`stack_windows`."""
        return stack_windows(refs, pad_to)

    # -- takeover ----------------------------------------------------------------------
    def state(self) -> dict:
        """What a new owner needs beyond the stream's tail (JSON-able; see the module doc)."""
        return {"v": STATE_VERSION, "last_seq": self.last_seq, "last_step": self.last_step,
                "flushed": self._flushed, "run": self.run,
                "tracks": {str(tid): [t.count, t.since, int(t.classified), t.last_step, t.last_seq,
                                      t.width, t.height] for tid, t in self.tracks.items()}}

    def restore(self, state: dict) -> None:
        """Apply :meth:`state` of the previous owner to windows rebuilt by pushing the
        processed tail of the stream: each track gets its length, phase and classified
        flag; tracks the owner no longer had are dropped (not reported as ended)."""
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"camera {self.camera}: window state version {state.get('v')!r} "
                             f"is not {STATE_VERSION}")
        tracks: dict[int, _Track] = {}
        for key, (count, since, classified, last_step, last_seq, width, height) in state["tracks"].items():
            tid = int(key)
            old = self.tracks.get(tid)
            if old is None or old.last_step != last_step:
                log.warning("camera %s track %d: the stream's tail does not end where the state "
                            "says (step %s, not %d); its window restarts with zeros", self.camera,
                            tid, None if old is None else old.last_step, last_step)
                old = None
            track = self._relaid(tid, old, int(count), int(last_step), int(last_seq))
            track.since, track.classified = int(since), bool(classified)
            track.width, track.height = int(width), int(height)
            tracks[tid] = track
        self.tracks = tracks
        self.last_seq, self.last_step = int(state["last_seq"]), int(state["last_step"])
        self._flushed = bool(state["flushed"])
        self.run = str(state.get("run", self.run))  # a state from before runs: the tail's
        self._ended = []

    def _relaid(self, tid: int, old: Optional[_Track], count: int, last_step: int,
                last_seq: int) -> _Track:
        """A fresh ring holding ``count`` steps ending at ``last_step``: those ``old`` holds,
        preceded by zero steps where the rebuilt window is shorter."""
        count = max(1, min(count, self.window))
        track = _Track(tid, self.window, self.num_person)
        held = old.order()[-count:] if old is not None else np.zeros(0, dtype=np.int64)
        first = last_step - count + 1
        for s in range(first, first + count - len(held)):
            seq, ts = self._fill_meta(s)
            track.append(None, s, seq, ts, present=False)
        for pos in held:
            track.append(old.buf[:, pos], int(old.steps[pos]), int(old.seqs[pos]),
                         float(old.ts[pos]), bool(old.seen[pos]))
        track.last_step, track.last_seq = last_step, last_seq
        return track


def stack_windows(refs: Sequence[WindowRef], pad_to: Optional[int] = None) -> np.ndarray:
    """Stack windows into float32 ``(N, 3, T, V, M)``, each zero-padded at the end.

    ``pad_to=None`` (dynamic-T model): T = the longest window rounded up to a multiple of 4;
    else T = ``pad_to`` (a fixed-T model: the card's window). Row i's valid frames are
    ``refs[i].frames``.
    """
    if not refs:
        raise ValueError("no windows to stack")
    longest = max(r.frames for r in refs)
    t = round_up(longest) if pad_to is None else int(pad_to)
    if t < longest:
        raise ValueError(f"pad_to={pad_to} is shorter than the longest window ({longest} frames)")
    _, _, v, m = refs[0].data.shape
    out = np.zeros((len(refs), CHANNELS, t, v, m), dtype=np.float32)
    for i, ref in enumerate(refs):
        if ref.data.shape[2:] != (v, m):
            raise ValueError(f"camera {ref.camera} track {ref.track_id}: window shape "
                             f"{ref.data.shape} does not match {(CHANNELS, '*', v, m)}")
        out[i, :, : ref.frames] = ref.data
    return out
