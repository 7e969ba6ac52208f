"""Rules: classified windows in, events out (pure: no I/O, the clock injected).

A :class:`Rule` fires for a track when its label's probability reaches ``threshold`` in
``consecutive`` consecutive classifications of that track; after an event, the same
(camera, track, label) stays quiet for ``cooldown_s`` seconds of *source* time (the
windows' ``ts_end``), so a replay decides exactly as the live run did.

Derived labels (:data:`DERIVED_LABELS`) are not the model's: ``fallen`` is raised by the
still-down watch (:mod:`workers.action.still_down`) through :meth:`Rules.derived`, with the
same streak and cooldown bookkeeping as a model label (its event's ``label_index`` is -1).
:meth:`Rules.state` / :meth:`Rules.load` carry a camera's streaks and last event times
to the worker that takes the camera over.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from shared.schemas import Event, event_id
from workers.action.window import WindowRef

log = logging.getLogger(__name__)

DEFAULT_ALERT_LABELS = ("falling", "fallen")
DERIVED_LABELS = {"fallen": "falling"}  # label -> the model label that arms it


@dataclass(frozen=True)
class Rule:
    label: str
    threshold: float
    consecutive: int = 1
    cooldown_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"rule {self.label!r}: threshold {self.threshold} is not within 0..1")
        if self.consecutive < 1:
            raise ValueError(f"rule {self.label!r}: consecutive {self.consecutive} must be >= 1")
        if not self.cooldown_s >= 0:
            raise ValueError(f"rule {self.label!r}: cooldown_s {self.cooldown_s} must be >= 0")


@dataclass(frozen=True)
class _Span:
    """What a rule needs of a window (or of a derived decision)."""

    camera: str
    track_id: int
    frame_start: int
    frame_end: int
    ts_start: float
    ts_end: float
    run: str = ""  # the producer's run of the last frame (part of the event id)

    @classmethod
    def of(cls, ref: WindowRef) -> "_Span":
        return cls(ref.camera, ref.track_id, ref.frame_start, ref.frame_end, ref.ts_start, ref.ts_end,
                   ref.run)


@dataclass
class _State:
    streak: int = 0  # consecutive classifications at or above the threshold
    last_event_ts: Optional[float] = None  # source ts_end of the last event


class Rules:
    """The rules of one action worker, with per-(camera, track, label) state.

    ``clock`` gives ``Event.emitted_at`` only; every decision uses source time.
    """

    def __init__(self, rules: Sequence[Rule], clock: Callable[[], float] = time.time,
                 confirm: Optional[Callable[[WindowRef, str], bool]] = None) -> None:
        labels = [r.label for r in rules]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"more than one rule for labels {dup}")
        self.rules = tuple(rules)
        self.clock = clock
        self.confirm = confirm  # (window, label) -> may it raise now? (workers.action.confirm)
        self._state: dict[tuple[str, int, str], _State] = {}
        self._camera_rules: dict[str, dict[str, Rule]] = {}  # a replay camera's own rules
        self._unconfirmed: set[str] = set()  # cameras whose own rules turn the confirmation off
        self._warned: set[str] = set()

    def decide(self, ref: WindowRef, probs: np.ndarray, labels: Sequence[str],
               model_name: str) -> list[Event]:
        """The events one classified window raises. ``probs``: ``(classes,)``, in the order
        of ``labels``."""
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        if probs.shape[0] != len(labels):
            raise ValueError(f"{probs.shape[0]} probabilities for {len(labels)} labels")
        events = []
        for rule in self.rules:
            if rule.label in DERIVED_LABELS:
                continue
            index = self._index(rule.label, labels)
            if index is None:
                continue
            event = self._apply(rule, _Span.of(ref), index, float(probs[index]), model_name, ref)
            if event is not None:
                events.append(event)
        return events

    def _index(self, label: str, labels: Sequence[str]) -> Optional[int]:
        try:
            return list(labels).index(label)
        except ValueError:
            if label not in self._warned:
                self._warned.add(label)
                log.warning("rule label %r is not among the model's labels %s", label, list(labels))
            return None

    def rule_for(self, label: str) -> Optional[Rule]:
        return next((r for r in self.rules if r.label == label), None)

    def derived(self, label: str, camera: str, track_id: int, score: float, frame_start: int,
                frame_end: int, ts_start: float, ts_end: float, model_name: str,
                run: str = "") -> Optional[Event]:
        """The event a derived label (``fallen``) raises now, if its rule lets it (``run``:
        that of the frame ``frame_end``)."""
        rule = self.rule_for(label)
        if rule is None:
            return None
        span = _Span(camera, int(track_id), int(frame_start), int(frame_end), float(ts_start),
                     float(ts_end), run)
        return self._apply(rule, span, -1, float(score), model_name)

    def override(self, camera: str, threshold: Optional[float] = None,
                 consecutive: Optional[int] = None, confirm: Optional[bool] = None) -> None:
        """For ``camera`` only (a replay trying another rule, a camera file's ``rules:``), the
        model labels' rules with this ``threshold`` and ``consecutive`` (None: unchanged);
        derived labels keep theirs. ``confirm`` False: no confirmation for this camera."""
        self._camera_rules[camera] = {
            r.label: replace(r, threshold=r.threshold if threshold is None else threshold,
                             consecutive=r.consecutive if consecutive is None else consecutive)
            for r in self.rules if r.label not in DERIVED_LABELS}
        if confirm is False:
            self._unconfirmed.add(camera)
        else:
            self._unconfirmed.discard(camera)

    def clear_override(self, camera: str) -> None:
        self._camera_rules.pop(camera, None)
        self._unconfirmed.discard(camera)

    def _apply(self, rule: Rule, ref: "_Span", index: int, score: float, model_name: str,
               window: Optional[WindowRef] = None) -> Optional[Event]:
        rule = self._camera_rules.get(ref.camera, {}).get(rule.label, rule)
        key = (ref.camera, ref.track_id, rule.label)
        state = self._state.get(key)
        if score < rule.threshold:
            if state is not None:
                state.streak = 0
            return None
        state = state or self._state.setdefault(key, _State())
        state.streak += 1
        if state.streak < rule.consecutive:
            return None
        if window is not None and not self._confirmed(window, rule.label):
            return None  # not confirmed now: the streak stays for the next window
        if state.last_event_ts is not None and ref.ts_end - state.last_event_ts < rule.cooldown_s:
            log.debug("camera %s track %d: %s %.2f within the %.1f s cooldown", ref.camera,
                      ref.track_id, rule.label, score, rule.cooldown_s)
            return None
        state.last_event_ts = ref.ts_end
        return Event(camera=ref.camera, track_id=ref.track_id, label=rule.label,
                     label_index=index, score=score, frame_start=ref.frame_start,
                     frame_end=ref.frame_end, ts_start=ref.ts_start, ts_end=ref.ts_end,
                     model=model_name, emitted_at=float(self.clock()),
                     id=event_id(ref.camera, ref.track_id, rule.label, ref.frame_end, ref.run))

    def _confirmed(self, window: WindowRef, label: str) -> bool:
        """May ``window`` raise ``label`` now (no gate, or a camera without it: yes)?"""
        if self.confirm is None or window.camera in self._unconfirmed:
            return True
        return self.confirm(window, label)

    def forget(self, camera: str, track_id: int) -> None:
        """Free one track's state (the track has ended)."""
        for rule in self.rules:
            self._state.pop((camera, track_id, rule.label), None)

    def forget_camera(self, camera: str) -> None:
        """Free every track's state of one camera (the camera went to another worker)."""
        for key in [k for k in self._state if k[0] == camera]:
            del self._state[key]

    def state(self, camera: str) -> dict:
        """One camera's rule state, JSON-able: ``{"track|label": [streak, last_event_ts]}``."""
        return {f"{t}|{label}": [s.streak, s.last_event_ts]
                for (c, t, label), s in self._state.items() if c == camera}

    def load(self, camera: str, state: dict) -> None:
        """Replace one camera's rule state by :meth:`state` of another worker."""
        self.forget_camera(camera)
        for key, (streak, last) in state.items():
            track, _, label = key.partition("|")
            self._state[(camera, int(track), label)] = _State(int(streak),
                                                               None if last is None else float(last))

    def __len__(self) -> int:
        """The number of (camera, track, label) states held."""
        return len(self._state)


def default_rules(labels: Iterable[str], alert: Iterable[str] = DEFAULT_ALERT_LABELS,
                  threshold: float = 0.5, consecutive: int = 1, cooldown_s: float = 10.0,
                  clock: Callable[[], float] = time.time) -> Rules:
    """One rule per label of ``alert`` that the model has (the others are logged)."""
    return Rules(rules_for(labels, alert, threshold, consecutive, cooldown_s), clock=clock)


def rules_for(labels: Iterable[str], alert: Iterable[str], threshold: float, consecutive: int,
              cooldown_s: float) -> list[Rule]:
    """One rule per label of ``alert`` that the model has, or that is derived from one it
    has (``fallen`` from ``falling``: threshold 0, one decision); the others are logged."""
    labels = list(labels)
    alert = list(dict.fromkeys(alert))
    rules, missing = [], []
    for x in alert:
        if x in labels:
            rules.append(Rule(x, threshold, consecutive, cooldown_s))
        elif DERIVED_LABELS.get(x) in labels:
            rules.append(Rule(x, 0.0, 1, cooldown_s))
            if DERIVED_LABELS[x] not in alert:
                log.warning("alert label %r follows %r events, which are not among the alert "
                            "labels %s: it will never be raised", x, DERIVED_LABELS[x], alert)
        else:
            missing.append(x)
    if missing:
        log.warning("alert labels %s are not among the model's labels %s (nor derived from "
                    "them)", missing, labels)
    return rules
