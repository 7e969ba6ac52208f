"""Reading the archive back: cameras, counts and records by capture time and seq.

``ArchiveReader(open_storage(settings))`` is what a replay uses (the contract in
``/work/coord/ARCHIVE_CONTRACT.md``): records come in seq order with the stream entry's
fields exactly as they were in Redis, so ``codec.decode_frame(record.fields)`` gives back
the producer's Frame with the very same JPEG bytes. Only the small indexes of the segments
that overlap the asked time range are read; a record whose bytes fail their check is
skipped with a warning (never handed out altered).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Optional

from workers.archive.segments import (KINDS, IndexRow, Segment, SegmentError, decode_fields, parse_name,
                                      read_index, record_payload)
from workers.archive.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchivedRecord:
    seq: int  # the message's seq (for events: the window's end frame)
    ts: float  # the message's capture time (events: the window's end)
    fields: dict  # the stream entry's fields exactly as they were in Redis (bytes keys and values)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"archive kind {kind!r} is unknown; expected one of {', '.join(KINDS)}")
    return kind


def list_segments(storage: Storage, camera: Optional[str] = None,
                  kind: Optional[str] = None) -> list[Segment]:
    """The segments in ``storage`` (of ``camera`` and ``kind`` when given), oldest first."""
    prefix = f"{camera}/" + (f"{kind}/" if kind else "") if camera else ""
    found = {parsed[0] for f in storage.list(prefix) if (parsed := parse_name(f.name)) and parsed[1] == "seg"}
    return sorted((s for s in found if kind is None or s.kind == kind), key=lambda s: (s.start, s.kind))


def _in_range(row: IndexRow, start_ts: Optional[float], end_ts: Optional[float],
              after_seq: Optional[int]) -> bool:
    return ((start_ts is None or row.ts >= start_ts) and (end_ts is None or row.ts < end_ts)
            and (after_seq is None or row.seq > after_seq))


class ArchiveReader:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def cameras(self) -> list[str]:
        """Cameras with anything archived."""
        return sorted({s.camera for s in list_segments(self.storage)})

    def segments(self, camera: str, kind: str, start_ts: Optional[float] = None,
                 end_ts: Optional[float] = None) -> list[Segment]:
        """The camera's segments of ``kind`` that may hold records in ``[start_ts, end_ts)``."""
        check_kind(kind)
        return [s for s in list_segments(self.storage, camera, kind)
                if (end_ts is None or s.start < end_ts) and (start_ts is None or s.end > start_ts)]

    def _rows(self, segment: Segment, start_ts, end_ts, after_seq) -> list[IndexRow]:
        rows = [r for r in read_index(self.storage, segment) if _in_range(r, start_ts, end_ts, after_seq)]
        return sorted(rows, key=lambda r: (r.seq, r.id_ms, r.id_seq))

    def count(self, camera: str, kind: str, start_ts: Optional[float] = None,
              end_ts: Optional[float] = None) -> int:
        """Records of ``kind`` with ``start_ts <= ts < end_ts`` (read from the indexes)."""
        segments = self.segments(camera, kind, start_ts, end_ts)
        return sum(len(self._rows(s, start_ts, end_ts, None)) for s in segments)

    def read(self, camera: str, kind: str, start_ts: Optional[float] = None, end_ts: Optional[float] = None,
             after_seq: Optional[int] = None) -> Iterator[ArchivedRecord]:
        """Records of ``kind`` with ``start_ts <= ts < end_ts`` and ``seq > after_seq``, in seq order."""
        for segment in self.segments(camera, kind, start_ts, end_ts):
            for row in self._rows(segment, start_ts, end_ts, after_seq):
                fields = self._fields(segment, row)
                if fields is not None:
                    yield ArchivedRecord(row.seq, row.ts, fields)

    def _fields(self, segment: Segment, row: IndexRow) -> Optional[dict]:
        try:
            return decode_fields(record_payload(self.storage.read(segment.seg, row.offset, row.length), row))
        except FileNotFoundError:  # removed by retention meanwhile
            return None
        except SegmentError as exc:
            log.warning("camera %s: archive record seq %d in %s skipped: %s", segment.camera, row.seq,
                        segment.seg, exc)
            return None
