"""Retention: which whole segments to delete, oldest first, by age and by size per camera.

:func:`plan` is pure (segments with their sizes, the time now, the limits in; the segments
to delete out); :func:`apply` lists the storage, plans and deletes. Age is measured from
a segment's end (capture time) to ``now``; size is a camera's segments and indexes of all
kinds together, and the oldest segments (by start, any kind) go first until it fits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable

from workers.archive.segments import Segment, parse_name
from workers.archive.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sized:
    segment: Segment
    bytes: int  # segment and index together


@dataclass(frozen=True)
class Limits:
    max_age_s: float
    max_bytes: int  # per camera


def plan(segments: Iterable[Sized], now: float, limits: Limits) -> list[Segment]:
    """The segments to delete, oldest first: those that ended more than ``max_age_s`` before
    ``now``, then per camera the oldest of the rest until the camera holds ``max_bytes`` or less
    (the newest segment of each kind, the one being written, is not deleted by size)."""
    by_camera: dict[str, list[Sized]] = {}
    for s in segments:
        by_camera.setdefault(s.segment.camera, []).append(s)
    doomed: list[Segment] = []
    for items in by_camera.values():
        items.sort(key=lambda s: (s.segment.start, s.segment.end, s.segment.kind))
        total = sum(s.bytes for s in items)
        newest = {s.segment.kind: s.segment for s in items}  # sorted: the last of each kind
        for s in items:
            too_old = s.segment.end <= now - limits.max_age_s
            if too_old or (total > limits.max_bytes and s.segment not in newest.values()):
                doomed.append(s.segment)
                total -= s.bytes
    return sorted(doomed, key=lambda s: (s.start, s.camera, s.kind))


def sized_segments(storage: Storage) -> list[Sized]:
    sizes: dict[Segment, int] = {}
    for f in storage.list():
        parsed = parse_name(f.name)
        if parsed is not None:
            sizes[parsed[0]] = sizes.get(parsed[0], 0) + f.size
    return [Sized(seg, n) for seg, n in sizes.items()]


def apply(storage: Storage, now: float, limits: Limits,
          forget: Callable[[Segment], None] = lambda s: None) -> list[Segment]:
    """Delete what :func:`plan` says (index first, so no index points at a missing segment)."""
    doomed = plan(sized_segments(storage), now, limits)
    for seg in doomed:
        forget(seg)
        storage.delete(seg.idx)
        storage.delete(seg.seg)
        log.info("camera %s: archive segment %s deleted (retention)", seg.camera, seg.base)
    return doomed
