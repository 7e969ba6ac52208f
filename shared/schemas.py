"""Message schemas: frozen dataclasses, each with a ``schema_version``.

They carry no (de)serialisation code; that lives in :mod:`shared.codec`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from shared.keys import REPLAY_SEP
from shared.skeleton import Person

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Frame:
    """One JPEG frame of a camera. ``seq`` is the 0-based source frame number."""

    camera: str
    seq: int
    ts: float  # capture time, seconds (epoch for live sources, media time + start for files)
    width: int
    height: int
    jpeg: bytes
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class EndOfStream:
    """Marks the end of a finite source (a file, a replay); passed on stage by stage."""

    camera: str
    seq: int  # number of frames the source produced
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Skeletons:
    """All tracked people of one frame (possibly none)."""

    camera: str
    seq: int
    ts: float
    width: int
    height: int
    people: tuple[Person, ...]
    model: str
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Event:
    """An action recognised for one track over a window of frames."""

    camera: str
    track_id: int
    label: str
    label_index: int
    score: float
    frame_start: int
    frame_end: int
    ts_start: float
    ts_end: float
    model: str
    emitted_at: float
    id: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(
                self, "id", event_id(self.camera, self.track_id, self.label, self.frame_end)
            )

    @property
    def job(self) -> str:
        """The replay job of an event of a replay camera (``<camera>~<job>``); "" for live ones."""
        return self.camera.partition(REPLAY_SEP)[2]


def event_id(camera: str, track_id: int, label: str, frame_end: int) -> str:
    """Deterministic id: a redelivered window yields the same id, so no second alert."""
    key = f"{camera}|{track_id}|{label}|{frame_end}".encode()
    return hashlib.sha1(key).hexdigest()[:20]


@dataclass(frozen=True)
class DeadLetter:
    """A message no stage could handle, kept with the reason."""

    stage: str
    stream: str
    message_id: str
    reason: str
    fields: dict[str, str] = field(default_factory=dict)  # the raw fields, truncated
    schema_version: int = SCHEMA_VERSION
