"""Incidents: events of one (camera, track) folded into new / update / end (pure, the clock
passed in), as Frigate reports tracked objects on ``frigate/events``.

* ``new``: an event of a (camera, track) with no open incident (e.g. its ``falling``).
* ``update``: a further event of that track while the incident is open (e.g. ``fallen``);
  the incident takes the event's label, its score, and the higher ``top_score``.
* ``end``: ``end_after_s`` seconds of the forwarder's clock after the incident's last
  event with no further one. A later event of the track opens a new incident.

``before`` / ``after`` are the incident before and after the change (equal for ``new``).
A redelivered event (the incident's latest event id again) changes nothing.

With a :class:`RedisIncidentStore` the open incidents are kept in Redis as they change, so a
restarted forwarder takes them up again: their ``end`` is published in time and the retained
counts return to 0.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Optional, Protocol

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

    def to_json(self) -> str:
        """All of it, ``last_seen`` included (what a store keeps)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Incident":
        return cls(**json.loads(raw))


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


class IncidentStore(Protocol):
    def load(self) -> list[Incident]: ...
    def save(self, incident: Incident) -> None: ...
    def delete(self, incident: Incident) -> None: ...


class RedisIncidentStore:
    """The open incidents of one target in a Redis hash ("camera|track" -> the incident's JSON)."""

    def __init__(self, r, key: str) -> None:
        self.r, self.key = r, key

    @staticmethod
    def field(incident: Incident) -> str:
        return f"{incident.camera}|{incident.track_id}"

    def load(self) -> list[Incident]:
        return [Incident.from_json(raw) for raw in self.r.hgetall(self.key).values()]

    def save(self, incident: Incident) -> None:
        self.r.hset(self.key, self.field(incident), incident.to_json())

    def delete(self, incident: Incident) -> None:
        self.r.hdel(self.key, self.field(incident))


class Incidents:
    """The open incidents of one target. :meth:`on_event` and :meth:`due` only compute;
    :meth:`apply` records a change once it has been published (in ``store`` too, when given:
    the incidents open there are taken up at start)."""

    def __init__(self, end_after_s: float = 30.0, store: Optional[IncidentStore] = None) -> None:
        if not end_after_s > 0:
            raise ValueError(f"end_after_s ({end_after_s}) must be > 0")
        self.end_after_s, self.store = end_after_s, store
        self._open: dict[tuple[str, int], Incident] = {}
        self._loaded = store is None  # loaded at first use (in the forwarder's retried loop)

    @property
    def open(self) -> dict[tuple[str, int], Incident]:
        if not self._loaded:
            self._open = {inc.key: inc for inc in self.store.load()}
            self._loaded = True
        return self._open

    def on_event(self, event: Event, now: float) -> Optional[Change]:
        return step(self.open.get((event.camera, event.track_id)), event, now)

    def due(self, now: float) -> list[Change]:
        """``end`` changes of the incidents quiet for ``end_after_s`` at ``now``."""
        return [Change(END, inc, replace(inc, end_time=now)) for inc in self.open.values()
                if now - inc.last_seen >= self.end_after_s]

    def apply(self, change: Change) -> None:
        if change.type == END:
            if self.store is not None:
                self.store.delete(change.after)
            self.open.pop(change.after.key, None)
        else:
            if self.store is not None:
                self.store.save(change.after)
            self.open[change.after.key] = change.after

    def counts_after(self, change: Change) -> dict[str, int]:
        """The counts of the labels ``change`` touches (its camera's), as they will be once applied."""
        after = dict(self.open)
        if change.type == END:
            after.pop(change.after.key, None)
        else:
            after[change.after.key] = change.after
        camera = change.after.camera
        return {label: sum(1 for inc in after.values() if inc.camera == camera and inc.label == label)
                for label in sorted({change.before.label, change.after.label})}

    def count(self, camera: str, label: str) -> int:
        """Open incidents of ``camera`` whose latest label is ``label``."""
        return sum(1 for inc in self.open.values() if inc.camera == camera and inc.label == label)
