"""The archive's files: segments of records and their indexes, per camera, kind and time slice.

Layout (names relative to the storage)::

    <camera>/<kind>/<start>-<end>.seg   records, appended: u32 length + the entry's fields
    <camera>/<kind>/<start>-<end>.idx   one fixed-size row per record (:data:`ROW`)

``kind`` is ``frames``, ``skeletons`` or ``events``; ``start``..``end`` are whole seconds
of capture time (the messages' ``ts``) in slices of ``archive_segment_s``. A record holds
the stream entry's fields exactly as Redis gave them (bytes keys and values), so a reader
gives back the producer's very JPEG bytes. An index row is (seq, ts, the entry id's two
numbers, offset, length, CRC-32 of the record): a time range or a seq is found by reading
the small indexes only.

:class:`SegmentWriter` appends a batch per segment: records, fsync, index rows, fsync (an
index row on disk thus always points at a record on disk); the caller acks after that. A
redelivered entry is not stored twice: frames and skeletons by their seq, events by their
entry id (several events may end on one frame).
"""

from __future__ import annotations

import logging
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Iterable, Optional

from shared.errors import ActionstreamError
from workers.archive.storage import Storage

log = logging.getLogger(__name__)

KINDS = ("frames", "skeletons", "events")
ROW = struct.Struct("<qdQQQII")  # seq, ts, id ms, id seq, offset, length, crc32
LEN = struct.Struct("<I")
MAX_CACHED = 256  # segments whose stored keys the writer keeps in memory
_NAME = re.compile(r"^(?P<camera>[^/]+)/(?P<kind>[a-z]+)/(?P<start>-?\d+)-(?P<end>-?\d+)\.(?P<ext>seg|idx)$")


class SegmentError(ActionstreamError, ValueError):
    """A record or index row cannot be read back; the text says why."""


@dataclass(frozen=True)
class Segment:
    camera: str
    kind: str
    start: int  # capture time, whole seconds: records have start <= ts < end
    end: int

    @property
    def base(self) -> str:
        return f"{self.camera}/{self.kind}/{self.start}-{self.end}"

    @property
    def seg(self) -> str:
        return self.base + ".seg"

    @property
    def idx(self) -> str:
        return self.base + ".idx"


@dataclass(frozen=True)
class IndexRow:
    seq: int
    ts: float
    id_ms: int
    id_seq: int
    offset: int
    length: int
    crc: int

    def pack(self) -> bytes:
        return ROW.pack(self.seq, self.ts, self.id_ms, self.id_seq, self.offset, self.length, self.crc)

    @property
    def entry_id(self) -> str:
        return f"{self.id_ms}-{self.id_seq}"


@dataclass(frozen=True)
class Record:
    """One stream entry to store: where it goes and what it is."""

    camera: str
    kind: str
    entry_id: str
    seq: int
    ts: float
    fields: dict


def segment_for(camera: str, kind: str, ts: float, segment_s: int) -> Segment:
    start = int(ts // segment_s) * segment_s
    return Segment(camera, kind, start, start + segment_s)


def parse_name(name: str) -> Optional[tuple[Segment, str]]:
    """``(segment, "seg" | "idx")`` for an archive file name, None for any other file."""
    m = _NAME.match(name)
    if m is None or m["kind"] not in KINDS:
        return None
    return Segment(m["camera"], m["kind"], int(m["start"]), int(m["end"])), m["ext"]


# ---------------------------------------------------------------- records


def encode_fields(fields: dict) -> bytes:
    """A stream entry's field map as bytes: u32 count, then u32 length + bytes per key and value."""
    parts = [LEN.pack(len(fields))]
    for key, value in fields.items():
        for item in (key, value):
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts += [LEN.pack(len(raw)), raw]
    return b"".join(parts)


def decode_fields(raw: bytes) -> dict[bytes, bytes]:
    try:
        (count,), pos, out = LEN.unpack_from(raw, 0), LEN.size, {}
        for _ in range(count):
            pair = []
            for _ in range(2):
                (n,) = LEN.unpack_from(raw, pos)
                pos += LEN.size
                if pos + n > len(raw):
                    raise SegmentError("a field runs past the record's end")
                pair.append(bytes(raw[pos:pos + n]))
                pos += n
            out[pair[0]] = pair[1]
    except struct.error as exc:
        raise SegmentError(f"record is cut short: {exc}") from None
    if pos != len(raw):
        raise SegmentError(f"record has {len(raw) - pos} bytes after its last field")
    return out


def frame_record(payload: bytes) -> bytes:
    """A record as stored in a segment: its length, then the payload."""
    return LEN.pack(len(payload)) + payload


def record_payload(segment_bytes: bytes, row: IndexRow) -> bytes:
    """The payload of ``row``'s record in the bytes read at ``row.offset``; checked."""
    if len(segment_bytes) < row.length or row.length < LEN.size:
        raise SegmentError(f"record at {row.offset} is cut short ({len(segment_bytes)} of {row.length} "
                           "bytes)")
    blob = segment_bytes[:row.length]
    if zlib.crc32(blob) != row.crc:
        raise SegmentError(f"record at {row.offset} fails its CRC check")
    (n,) = LEN.unpack_from(blob, 0)
    if n != row.length - LEN.size:
        raise SegmentError(f"record at {row.offset} says {n} bytes, its index {row.length - LEN.size}")
    return blob[LEN.size:]


def parse_index(raw: bytes, segment_size: Optional[int] = None) -> list[IndexRow]:
    """The whole rows of an index; with ``segment_size``, only the rows up to the first one
    pointing past the segment's end (the index outran its segment: a crash)."""
    rows = []
    for i in range(len(raw) // ROW.size):
        row = IndexRow(*ROW.unpack_from(raw, i * ROW.size))
        if segment_size is not None and row.offset + row.length > segment_size:
            break
        rows.append(row)
    return rows


def read_index(storage: Storage, segment: Segment) -> list[IndexRow]:
    try:
        raw = storage.read(segment.idx)
    except FileNotFoundError:
        return []
    return parse_index(raw, storage.size(segment.seg))


# ---------------------------------------------------------------- writer


def _id_parts(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def dedupe_key(kind: str, seq: int, id_ms: int, id_seq: int):
    return (id_ms, id_seq) if kind == "events" else seq


class SegmentWriter:
    """Appends records to their segments, durably, each stream entry once."""

    def __init__(self, storage: Storage, segment_s: int) -> None:
        self.storage, self.segment_s = storage, segment_s
        self._keys: dict[Segment, set] = {}  # segment -> dedupe keys stored in it

    def forget(self, segment: Segment) -> None:
        """``segment`` was deleted (retention)."""
        self._keys.pop(segment, None)

    def _stored(self, segment: Segment) -> set:
        keys = self._keys.get(segment)
        if keys is None:
            keys = {dedupe_key(segment.kind, r.seq, r.id_ms, r.id_seq) for r in self._recover(segment)}
            if len(self._keys) >= MAX_CACHED:
                self._keys.pop(next(iter(self._keys)))
            self._keys[segment] = keys
        return keys

    def _recover(self, segment: Segment) -> list[IndexRow]:
        """The segment's valid index rows; a torn or runaway tail (a crash) is cut off."""
        size = self.storage.size(segment.idx)
        rows = read_index(self.storage, segment)
        if size != len(rows) * ROW.size:
            log.warning("camera %s: index %s had a torn tail (%d bytes, %d whole rows); cut back",
                        segment.camera, segment.idx, size, len(rows))
            self.storage.truncate(segment.idx, len(rows) * ROW.size)
        return rows

    def write(self, segment: Segment, records: Iterable[Record]) -> tuple[int, int]:
        """Store ``records`` (all of ``segment``) durably: ``(stored, duplicates)``. Raises
        OSError (a full disk ...) with nothing of this call indexed."""
        stored_keys = self._stored(segment)
        fresh, keys, dupes = [], [], 0
        for rec in records:
            id_ms, id_seq = _id_parts(rec.entry_id)
            key = dedupe_key(segment.kind, rec.seq, id_ms, id_seq)
            if key in stored_keys or key in keys:
                dupes += 1
                continue
            fresh.append((rec, id_ms, id_seq, frame_record(encode_fields(rec.fields))))
            keys.append(key)
        if not fresh:
            return 0, dupes
        offset = self.storage.append(segment.seg, b"".join(blob for *_, blob in fresh))
        self.storage.sync(segment.seg)
        rows = []
        for rec, id_ms, id_seq, blob in fresh:
            rows.append(IndexRow(rec.seq, float(rec.ts), id_ms, id_seq, offset, len(blob), zlib.crc32(blob)))
            offset += len(blob)
        self.storage.append(segment.idx, b"".join(r.pack() for r in rows))
        self.storage.sync(segment.idx)
        stored_keys.update(keys)
        return len(fresh), dupes
