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
    run: str = ""  # the producer's run of the source (see :func:`run_id`); "" for old messages
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
    run: str = ""  # the run of the frame it was posed from
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
    id: str = ""  # the action stage gives event_id(..., run); left out: computed without a run
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


def event_id(camera: str, track_id: int, label: str, frame_end: int, run: str = "") -> str:
    """Deterministic id: a redelivered window yields the same id, so no second alert; a
    window of another ``run`` of the camera (another source, another producer epoch) another
    one. ``run`` "" (messages from before runs existed) keeps the old id."""
    key = f"{camera}|{track_id}|{label}|{frame_end}" + (f"|{run}" if run else "")
    return hashlib.sha1(key.encode()).hexdigest()[:20]


MAX_RUN_CHARS = 64


def run_id(epoch: int, source_identity: str) -> str:
    """A producer's run of a camera: its epoch and a digest of what it reads
    (``source_identity``), e.g. ``1.3f9a0c2e81b4``. Equal for equal inputs, so two runs of
    one file on fresh servers give the same event ids; different for another source."""
    digest = hashlib.sha1(source_identity.encode("utf-8", "replace")).hexdigest()[:12]
    return f"{int(epoch)}.{digest}"


@dataclass(frozen=True)
class DeadLetter:
    """A message no stage could handle, kept with the reason."""

    stage: str
    stream: str
    message_id: str
    reason: str
    fields: dict[str, str] = field(default_factory=dict)  # the raw fields, truncated
    schema_version: int = SCHEMA_VERSION
