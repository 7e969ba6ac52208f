"""The action stage's pure core: skeletons in, windows, scores and events out, and the
per-camera state a worker taking a camera over needs to continue exactly.

:class:`ActionCore` holds one :class:`CameraWindows` per camera, the :class:`Rules` and the
:class:`StillDown` watch. :meth:`ActionCore.process` takes a batch of messages (any cameras,
each camera's in seq order), classifies every due window in one classifier call, and then
replays the batch's timeline frame by frame — tracks ended, the frame's postures for the
still-down watch, the frame's classified windows through the rules — so the events do not
depend on where batches begin and end. :meth:`ActionCore.state` is a camera's JSON state
after the messages processed so far; :meth:`ActionCore.rebuild` restores it on another
worker from the processed tail of the skeleton stream (:meth:`ActionCore.tail_seconds` of
it) plus that state.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from shared.schemas import EndOfStream, Event, Skeletons
from workers.action.rules import DERIVED_LABELS, Rules
from workers.action.still_down import StillDown, posture
from workers.action.window import STATE_VERSION as WINDOW_STATE_VERSION
from workers.action.window import CameraWindows, WindowRef, stack_windows

log = logging.getLogger(__name__)

Message = Union[Skeletons, EndOfStream]
FALLEN = "fallen"
STATE_VERSION = 1


@dataclass
class Result:
    """What one batch gave: the classified windows, their probabilities, the events."""

    refs: list[WindowRef] = field(default_factory=list)
    probs: Optional[np.ndarray] = None
    events: list[Event] = field(default_factory=list)
    cameras: set[str] = field(default_factory=set)  # cameras whose state changed


class ActionCore:
    """Windows, classifier, rules and still-down watch of one action worker (no I/O).

    ``classifier``: an :class:`~workers.action.classifier.ActionClassifier` (its card gives
    window, fps, M, labels); ``stride``, ``min_frames``, ``max_idle`` count steps at the
    card's fps; ``fallen_after_s``: source seconds after a ``falling`` event that raise
    ``fallen`` when the track has not got up (only when ``rules`` has a ``fallen`` rule).
    """

    def __init__(self, classifier, rules: Rules, stride: int, min_frames: int,
                 max_idle: int = 30, fallen_after_s: float = 10.0, getup_s: float = 1.0) -> None:
        self.classifier = classifier
        self.card = classifier.card
        self.rules = rules
        self.stride, self.min_frames, self.max_idle = stride, min(min_frames, self.card.window), max_idle
        self.still = StillDown(fallen_after_s, getup_s)
        self.windows: dict[str, CameraWindows] = {}

    def new_windows(self, camera: str) -> CameraWindows:
        card = self.card
        return CameraWindows(camera=camera, window=card.window, stride=self.stride,
                             num_person=card.num_person, min_frames=self.min_frames,
                             max_idle=self.max_idle, fps=card.fps)

    def windows_for(self, camera: str) -> CameraWindows:
        windows = self.windows.get(camera)
        if windows is None:
            windows = self.windows[camera] = self.new_windows(camera)
        return windows

    def tail_seconds(self) -> float:
        """Source seconds of processed skeletons :meth:`rebuild` needs."""
        return float(self.new_windows("").tail_seconds())

    # -- processing ----------------------------------------------------------------------
    def process(self, messages: Iterable[Message]) -> Result:
        """One batch; see the module doc."""
        result = Result()
        timeline: list[tuple] = []
        for msg in messages:
            windows = self.windows_for(msg.camera)
            result.cameras.add(msg.camera)
            if isinstance(msg, EndOfStream):
                first = len(result.refs)
                result.refs.extend(windows.flush())  # classify what the last stride left over
                timeline.extend(("ref", i) for i in range(first, len(result.refs)))
                continue
            accepted = windows.frames
            windows.push(msg)
            timeline.extend(("ended", msg.camera, tid) for tid in windows.ended())
            if windows.frames == accepted:
                continue  # ignored, or on a step already taken
            timeline.append(("frame", msg))
            first = len(result.refs)
            result.refs.extend(windows.due())
            timeline.extend(("ref", i) for i in range(first, len(result.refs)))
        if result.refs:
            result.probs = self.classify(result.refs)
        for item in timeline:
            result.events.extend(self._step(item, result))
        return result

    def classify(self, refs: Sequence[WindowRef]) -> np.ndarray:
        """One classifier call for ``refs``, with each window's length and frame size."""
        return self.classifier.classify(stack_windows(refs), lengths=[ref.frames for ref in refs],
                                        sizes=[(ref.width, ref.height) for ref in refs])

    def _step(self, item: tuple, result: Result) -> list[Event]:
        kind = item[0]
        if kind == "ended":
            self.rules.forget(item[1], item[2])  # a still-down watch outlives its track
            return []
        if kind == "frame":
            msg = item[1]
            if not self.still.watching(msg.camera):
                return []
            postures = {p.track_id: posture(p) for p in msg.people if p.track_id >= 0}
            events = []
            for down in self.still.observe(msg.camera, msg.seq, msg.ts, postures):
                event = self.rules.derived(FALLEN, down.camera, down.track_id, 1.0, down.armed_seq,
                                           down.seq, down.armed_ts, down.ts, self.card.name, msg.run)
                events.extend([event] if event is not None else [])
            return events
        ref = result.refs[item[1]]
        events = self.rules.decide(ref, result.probs[item[1]], self.card.labels, self.card.name)
        if self.rules.rule_for(FALLEN) is not None:
            for event in events:
                if event.label == DERIVED_LABELS[FALLEN]:
                    self.still.arm(event.camera, event.track_id, event.frame_end, event.ts_end)
        return events

    # -- takeover ------------------------------------------------------------------------
    def state(self, camera: str) -> str:
        """The camera's state after the messages processed so far (JSON)."""
        windows = self.windows_for(camera)
        return json.dumps({"v": STATE_VERSION, "windows": windows.state(),
                           "rules": self.rules.state(camera), "still_down": self.still.state(camera)},
                          separators=(",", ":"))

    def rebuild(self, camera: str, tail: Iterable[Message], state: Optional[Union[str, bytes]]) -> None:
        """Take ``camera`` over: its windows from the processed ``tail`` of its skeleton
        stream (oldest first), then the previous owner's ``state`` (None: none was stored;
        every window of the tail then counts as classified, the rules start afresh)."""
        windows = self.new_windows(camera)
        doc = self._parse(camera, state)
        for msg in tail:
            if isinstance(msg, EndOfStream):
                windows.flush()
                continue
            try:
                windows.push(msg)
            except Exception as exc:  # a frame that once failed (dead-lettered): skipped
                log.warning("camera %s: frame seq %d of the tail skipped: %s", camera, msg.seq, exc)
                continue
            if doc is None:
                windows.due()  # classified before: advance the stride bookkeeping only
        windows.ended()
        self.rules.forget_camera(camera)
        self.still.forget_camera(camera)
        if doc is not None:
            windows.restore(doc["windows"])
            self.rules.load(camera, doc["rules"])
            self.still.load(camera, doc["still_down"])
        self.windows[camera] = windows

    @staticmethod
    def _parse(camera: str, state: Optional[Union[str, bytes]]) -> Optional[dict]:
        if state is None:
            return None
        try:
            doc = json.loads(state)
            if doc.get("v") != STATE_VERSION:
                raise ValueError(f"version {doc.get('v')!r}")
            missing = {"windows", "rules", "still_down"} - set(doc)
            if missing or doc["windows"].get("v") != WINDOW_STATE_VERSION:
                raise ValueError(f"fields {sorted(missing)} missing or a window state of another version")
            return doc
        except (ValueError, AttributeError, TypeError) as exc:
            log.warning("camera %s: stored action state is unusable (%s); windows are rebuilt "
                        "without it", camera, exc)
            return None

    def forget_camera(self, camera: str) -> None:
        self.windows.pop(camera, None)
        self.rules.forget_camera(camera)
        self.still.forget_camera(camera)


def select_tail(messages: Sequence[Message], seconds: float) -> list[Message]:
    """The shortest suffix of ``messages`` whose skeletons span at least ``seconds`` of
    source time (all of them when they span less)."""
    last = next((m.ts for m in reversed(messages) if isinstance(m, Skeletons)), None)
    if last is None:
        return list(messages)
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if isinstance(msg, Skeletons) and last - msg.ts >= seconds:
            return list(messages[i:])
    return list(messages)
