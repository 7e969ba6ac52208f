"""Per-camera, per-track windows of normalised skeletons: the ST-GCN input, frame by frame.

A :class:`CameraWindows` receives a camera's :class:`~shared.schemas.Skeletons` in seq order
and keeps, for every tracked person, a ring buffer of its last ``window`` frames, each
already in the ST-GCN contract's form (``(3, V, M)``: x/width - 0.5, y/height - 0.5,
confidence; joints with confidence 0 at x = y = 0). Person slot ``m = 0`` is the track
itself, slots ``1..M-1`` the other people of that frame, nearest first (by box centre).

Time steps are source seq numbers: a frame where a track is missing (or a seq the stream
skipped) becomes an all-zero step, as the original ST-GCN feeder leaves frames without a
skeleton at zero. A track missing for more than ``max_idle`` steps is closed and freed.

:meth:`CameraWindows.due` hands out :class:`WindowRef` s — each a snapshot of one window,
so that later frames cannot change it before it is classified — and
:meth:`CameraWindows.batch` stacks them into the model input ``(N, 3, T, V, M)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from shared.schemas import Skeletons
from shared.skeleton import NUM_JOINTS, Person

log = logging.getLogger(__name__)

CHANNELS = 3  # x, y, confidence
T_MULTIPLE = 4  # ST-GCN halves T twice; a dynamic-T model takes multiples of 4
_LOG_EVERY = 100  # ignored frames: log the first and then every 100th


def round_up(n: int, multiple: int = T_MULTIPLE) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-int(n) // multiple) * multiple


@dataclass(frozen=True)
class WindowRef:
    """One track's window, due for classification.

    ``frame_start``/``frame_end``: the first and last source seq it covers (inclusive);
    ``frames``: its length in time steps (= ``frame_end - frame_start + 1``, at most the
    window); ``seen``: the steps in which the track was actually present.
    ``data``: float32 ``(3, frames, V, M)``, the normalised window (a private copy).
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


class _Track:
    """One track's ring buffer: ``buf`` float32 ``(3, window, V, M)``, seq and ts per step."""

    __slots__ = ("track_id", "buf", "seqs", "ts", "head", "count", "seen", "last_seq",
                 "since", "classified")

    def __init__(self, track_id: int, window: int, num_person: int) -> None:
        self.track_id = track_id
        self.buf = np.zeros((CHANNELS, window, NUM_JOINTS, num_person), dtype=np.float32)
        self.seqs = np.zeros(window, dtype=np.int64)
        self.ts = np.zeros(window, dtype=np.float64)
        self.head = 0  # next write position
        self.count = 0  # steps held (<= window)
        self.seen = np.zeros(window, dtype=bool)
        self.last_seq = -1  # last seq the track was present in
        self.since = 0  # steps appended since the last classification
        self.classified = False

    @property
    def window(self) -> int:
        return self.buf.shape[1]

    def append(self, step: Optional[np.ndarray], seq: int, ts: float, present: bool) -> None:
        """Write one time step (``step`` ``(3, V, M)``, or None for an all-zero step)."""
        h = self.head
        if step is None:
            self.buf[:, h] = 0.0
        else:
            self.buf[:, h] = step
        self.seqs[h], self.ts[h], self.seen[h] = seq, ts, present
        self.head = (h + 1) % self.window
        self.count = min(self.count + 1, self.window)
        self.since += 1

    def extend(self, step: np.ndarray, seq: int, ts: float) -> None:
        """Append the track's step at ``seq``, zero-filling the steps it missed since
        ``last_seq`` (their ts interpolated between the two frames)."""
        if self.last_seq >= 0 and seq - self.last_seq > 1:
            last_ts = self.ts[(self.head - 1) % self.window]
            gap = seq - self.last_seq - 1
            fill_ts = np.linspace(last_ts, ts, gap + 2)[1:-1]
            for k in range(max(0, gap - self.window), gap):  # only the last `window` matter
                self.append(None, self.last_seq + 1 + k, float(fill_ts[k]), present=False)
        self.append(step, seq, ts, present=True)
        self.last_seq = seq

    def snapshot(self, camera: str) -> WindowRef:
        """A copy of the window held now, oldest step first."""
        order = (self.head - self.count + np.arange(self.count)) % self.window
        self.since = 0
        self.classified = True
        return WindowRef(
            camera=camera, track_id=self.track_id,
            frame_start=int(self.seqs[order[0]]), frame_end=int(self.seqs[order[-1]]),
            ts_start=float(self.ts[order[0]]), ts_end=float(self.ts[order[-1]]),
            frames=int(self.count), seen=int(self.seen[order].sum()),
            data=self.buf[:, order],  # fancy indexing copies
        )


class CameraWindows:
    """All tracks' windows of one camera (frames must come from one camera, in seq order).

    ``window``: steps kept per track (the card's T); ``stride``: steps between two
    classifications of a track; ``min_frames``: a new track is first classified once it
    holds this many steps (then every ``stride``); ``max_idle``: a track missing for more
    steps than this is closed; ``num_person``: M.
    """

    def __init__(self, window: int = 300, stride: int = 30, num_person: int = 2,
                 max_idle: int = 30, min_frames: int = 32, *, camera: str = "") -> None:
        if window < 1 or stride < 1 or num_person < 1 or max_idle < 0:
            raise ValueError(f"window ({window}), stride ({stride}) and num_person ({num_person}) "
                             f"must be >= 1 and max_idle ({max_idle}) >= 0")
        if not 1 <= min_frames <= window:
            raise ValueError(f"min_frames ({min_frames}) must be within 1..window ({window})")
        self.camera = camera
        self.window, self.stride, self.num_person = window, stride, num_person
        self.max_idle, self.min_frames = max_idle, min_frames
        self.tracks: dict[int, _Track] = {}
        self.last_seq = -1
        self.ignored = 0  # frames dropped: older or repeated seq, bad frame size
        self._ended: list[int] = []
        self._flushed = False

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
        self._flushed = False
        steps = frame_slots(skel.people, skel.width, skel.height, self.num_person)
        self._close_idle(skel.seq, steps)
        for tid, step in steps.items():
            track = self.tracks.get(tid)
            if track is None:
                track = self.tracks[tid] = _Track(tid, self.window, self.num_person)
                log.debug("camera %s track %d: new window at seq %d", self.camera, tid, skel.seq)
            track.extend(step, skel.seq, skel.ts)
        self.last_seq = skel.seq

    def _ignore(self, skel: Skeletons, why: str) -> None:
        self.ignored += 1
        if self.ignored % _LOG_EVERY == 1:
            log.warning("camera %s: frame seq %d ignored: %s (%d frames ignored so far)",
                        self.camera, skel.seq, why, self.ignored)

    def _close_idle(self, seq: int, present: dict[int, np.ndarray]) -> None:
        """Close the tracks that have been missing for more than ``max_idle`` steps at ``seq``
        (a present track whose gap was that long starts a fresh window)."""
        for tid, track in list(self.tracks.items()):
            missing = seq - track.last_seq - (1 if tid in present else 0)
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
            if track.last_seq != self.last_seq or track.since == 0:
                continue
            if (track.classified and track.since >= self.stride) or (
                    not track.classified and track.count >= self.min_frames):
                refs.append(track.snapshot(self.camera))
        return refs

    def flush(self) -> list[WindowRef]:
        """At the end of a stream: every track's window holding steps not yet classified
        (and at least ``min_frames`` steps). The next push, at any seq, starts afresh."""
        refs = [t.snapshot(self.camera) for t in self.tracks.values()
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
        self.last_seq = -1
        self._flushed = False

    def batch(self, refs: Sequence[WindowRef], pad_to: Optional[int] = None) -> np.ndarray:
        """The model input for ``refs``: float32 ``(N, 3, T, V, M)``, see :func:`stack_windows`."""
        return stack_windows(refs, pad_to)


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
