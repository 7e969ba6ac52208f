"""``actionstream archive export``: any stretch of a camera's archived skeletons as the
Kinetics-skeleton JSON the ST-GCN trainer reads (``actionstream stgcn fall-model --skeletons
DIR``, :func:`shared.kinetics.read_exported_skeletons`).

The file is the one ``actionstream up --skeletons-out`` writes (:mod:`workers.console.exports`, the
same writer): ``frame_index`` = the frame's seq, per person ``pose`` (x/width, y/height per
OpenPose-18 joint), ``score`` and ``track_id``. ``track``: only that track's person.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from shared import codec
from shared.schemas import Skeletons
from shared.skeleton import Person
from workers.archive.reader import ArchiveReader
from workers.archive.storage import ArchiveError
from shared.kinetics import write_kinetics_frames

log = logging.getLogger(__name__)


def parse_time(text: str, what: str) -> float:
    """Seconds since the epoch from ``text``: a number, or an ISO 8601 time (UTC when it names no zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ArchiveError(f"{what} {text!r} is neither seconds since the epoch nor an ISO time "
                           "(2026-11-30T08:00:00, +00:00 for a zone)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def skeleton_frames(reader: ArchiveReader, camera: str, start_ts: Optional[float], end_ts: Optional[float],
                    track: Optional[int] = None) -> Iterator[tuple[int, int, int, list[Person]]]:
    """``(seq, width, height, people)`` of each archived skeleton frame of the stretch, in seq order."""
    for rec in reader.read(camera, "skeletons", start_ts, end_ts):
        try:
            msg = codec.decode_skeletons(rec.fields)
        except codec.DecodeError as exc:  # archived entries were decoded once: a damaged record
            log.warning("camera %s: archived skeletons of frame %d skipped: %s", camera, rec.seq, exc)
            continue
        if isinstance(msg, Skeletons):
            people = [p for p in msg.people if track is None or p.track_id == track]
            yield msg.seq, msg.width, msg.height, people


def export_kinetics(reader: ArchiveReader, camera: str, start_ts: Optional[float], end_ts: Optional[float],
                    out: str | Path, track: Optional[int] = None) -> int:
    """Write the stretch to ``out``; the number of frames written. :class:`ArchiveError` when the
    archive holds no skeletons of ``camera`` in it (no empty file is left)."""
    if not reader.count(camera, "skeletons", start_ts, end_ts):
        known = ", ".join(reader.cameras()) or "none"
        raise ArchiveError(f"the archive holds no skeletons of camera {camera!r} between {start_ts} and "
                           f"{end_ts} (cameras archived: {known})")
    frames = 0

    def counted():
        nonlocal frames
        for item in skeleton_frames(reader, camera, start_ts, end_ts, track):
            frames += 1
            yield item

    write_kinetics_frames(counted(), camera, out)
    log.info("camera %s: %d archived skeleton frames written to %s", camera, frames, out)
    return frames
