"""Incidents: events of one (camera, track) folded into new / update / end (pure, the clock
passed in), as Frigate reports tracked objects on ``frigate/events``.

* ``new``: an event of a (camera, track) with no open incident (e.g. its ``falling``).
* ``update``: a further event of that track while the incident is open (e.g. ``fallen``);
  the incident takes the event's label, its score, and the higher ``top_score``.
* ``end``: ``end_after_s`` seconds of the forwarder's clock after the incident's last
  event with no further one. A later event of the track opens a new incident.

``before`` / ``after`` are the incident before and after the change (equal for ``new``).
A redelivered event (the incident's latest event id again) changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Optional

from shared import codec
from shared.schemas import Event

NEW, UPDATE, END = "new", "update", "end"


@dataclass(frozen=True)
class Incident:
    id: str  # the id of the event that opened it
    camera: str
    track_id: int
    label: str  # the latest event's
    score: float  # the latest event's
    top_score: float
    start_time: float  # the first event's emitted_at (unix seconds)
    last_seen: float  # the forwarder's clock at the latest event
    end_time: Optional[float]  # None while open
    events: int
    event: dict  # the latest event, as on the events stream

    @property
    def key(self) -> tuple[str, int]:
        return self.camera, self.track_id

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["last_seen"]
        return out


@dataclass(frozen=True)
class Change:
    type: str  # new | update | end
    before: Incident
    after: Incident

    def payload(self) -> str:
        return json.dumps({"type": self.type, "before": self.before.to_dict(),
                           "after": self.after.to_dict()}, separators=(",", ":"))


def step(open_incident: Optional[Incident], event: Event, now: float) -> Optional[Change]:
    """The change ``event`` makes to the (camera, track)'s open incident (None: a redelivery)."""
    body = codec.event_to_dict(event)
    if open_incident is None:
        inc = Incident(event.id, event.camera, event.track_id, event.label, event.score, event.score,
                       event.emitted_at, now, None, 1, body)
        return Change(NEW, inc, inc)
    if open_incident.event.get("id") == event.id:
        return None
    after = replace(open_incident, label=event.label, score=event.score, last_seen=now,
                    top_score=max(open_incident.top_score, event.score),
                    events=open_incident.events + 1, event=body)
    return Change(UPDATE, open_incident, after)


class Incidents:
    """The open incidents of one target. :meth:`on_event` and :meth:`due` only compute;
    :meth:`apply` records a change once it has been published."""

    def __init__(self, end_after_s: float = 30.0) -> None:
        if not end_after_s > 0:
            raise ValueError(f"end_after_s ({end_after_s}) must be > 0")
        self.end_after_s = end_after_s
        self.open: dict[tuple[str, int], Incident] = {}

    def on_event(self, event: Event, now: float) -> Optional[Change]:
        return step(self.open.get((event.camera, event.track_id)), event, now)

    def due(self, now: float) -> list[Change]:
        """``end`` changes of the incidents quiet for ``end_after_s`` at ``now``."""
        return [Change(END, inc, replace(inc, end_time=now)) for inc in self.open.values()
                if now - inc.last_seen >= self.end_after_s]

    def apply(self, change: Change) -> None:
        if change.type == END:
            self.open.pop(change.after.key, None)
        else:
            self.open[change.after.key] = change.after

    def count(self, camera: str, label: str) -> int:
        """Open incidents of ``camera`` whose latest label is ``label``."""
        return sum(1 for inc in self.open.values() if inc.camera == camera and inc.label == label)
