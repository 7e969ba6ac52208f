"""Segments, indexes and the reader on a real directory: byte-identical records, lookups by
capture time and seq, each entry stored once, torn and damaged files handled."""

from __future__ import annotations

import errno

import pytest

from shared import codec
from tests.workers.archive.archive_helpers import FPS, T0, frame
from workers.archive.reader import ArchiveReader
from workers.archive.segments import (ROW, Record, SegmentError, SegmentWriter, decode_fields, encode_fields,
                                      segment_for)
from workers.archive.storage import ArchiveError, LocalStorage

SEGMENT_S = 2  # 20 frames per segment at FPS


def _records(camera: str, seqs, kind: str = "frames", first_ms: int = 1000) -> list[Record]:
    out = []
    for s in seqs:
        fields = {k.encode(): (v if isinstance(v, bytes) else str(v).encode())
                  for k, v in codec.encode_frame(frame(camera, s)).items()}
        out.append(Record(camera, kind, f"{first_ms + s}-0", s, T0 + s / FPS, fields))
    return out


def _write(writer: SegmentWriter, records: list[Record]) -> tuple[int, int]:
    stored = dupes = 0
    by_segment: dict = {}
    for rec in records:
        by_segment.setdefault(segment_for(rec.camera, rec.kind, rec.ts, SEGMENT_S), []).append(rec)
    for seg, recs in by_segment.items():
        a, b = writer.write(seg, recs)
        stored, dupes = stored + a, dupes + b
    return stored, dupes


@pytest.fixture
def storage(tmp_path):
    s = LocalStorage(tmp_path / "archive", writer=True)
    yield s
    s.close()


@pytest.mark.parametrize("fields", [
    {b"v": b"1", b"jpeg": b"\xff\xd8\x00\x00\xff\xd9"},
    {b"": b"", b"k": b"\x00" * 300},
    {b"event": '{"camera":"c\u00e9"}'.encode()},
])
def test_fields_round_trip_byte_for_byte(fields):
    assert decode_fields(encode_fields(fields)) == fields


@pytest.mark.parametrize("raw, error", [
    (b"", "cut short"),
    (encode_fields({b"a": b"bc"})[:-1], "past the record's end"),
    (encode_fields({b"a": b"bc"}) + b"x", "after its last field"),
    (b"\x02\x00\x00\x00\x01\x00\x00\x00a", "cut short"),
])
def test_bad_records_raise_segment_error(raw, error):
    with pytest.raises(SegmentError, match=error):
        decode_fields(raw)


def test_read_by_time_range_and_after_seq_gives_the_fields_as_written(storage):
    records = _records("cam-1", range(50))  # 2.5 segments
    assert _write(SegmentWriter(storage, SEGMENT_S), records) == (50, 0)
    reader = ArchiveReader(storage)
    assert reader.cameras() == ["cam-1"]
    assert len(reader.segments("cam-1", "frames")) == 3
    got = list(reader.read("cam-1", "frames"))
    assert [g.seq for g in got] == list(range(50))
    assert [g.fields for g in got] == [r.fields for r in records]
    assert codec.decode_frame(got[7].fields) == frame("cam-1", 7)  # the very JPEG bytes
    start, end = T0 + 1.5, T0 + 4.0  # seqs 15..39: across three segments, end exclusive
    assert [g.seq for g in reader.read("cam-1", "frames", start, end)] == list(range(15, 40))
    assert reader.count("cam-1", "frames", start, end) == 25
    assert [g.seq for g in reader.read("cam-1", "frames", start, end, after_seq=33)] == list(range(34, 40))
    assert len(reader.segments("cam-1", "frames", start, T0 + 1.9)) == 1  # only that segment's index is read
    assert reader.count("cam-1", "skeletons") == 0 and list(reader.read("cam-9", "frames")) == []


def test_a_redelivered_entry_is_stored_once_even_after_a_restart(storage):
    records = _records("cam-1", range(30))
    assert _write(SegmentWriter(storage, SEGMENT_S), records[:20]) == (20, 0)
    assert _write(SegmentWriter(storage, SEGMENT_S), records) == (10, 20)  # a new writer reads the index
    assert [g.seq for g in ArchiveReader(storage).read("cam-1", "frames")] == list(range(30))


def test_events_ending_on_one_frame_are_all_kept_and_each_entry_once(storage):
    base = _records("cam-1", [40], kind="events")[0]
    a, b = (Record("cam-1", "events", i, 40, base.ts, {b"event": i.encode()}) for i in ("5-0", "5-1"))
    seg = segment_for("cam-1", "events", base.ts, SEGMENT_S)
    writer = SegmentWriter(storage, SEGMENT_S)
    assert writer.write(seg, [a, b]) == (2, 0)
    assert writer.write(seg, [b]) == (0, 1)
    assert [g.fields for g in ArchiveReader(storage).read("cam-1", "events")] == [a.fields, b.fields]


def test_a_torn_index_tail_is_cut_back_and_writing_goes_on(storage):
    records = _records("cam-1", range(20))
    _write(SegmentWriter(storage, SEGMENT_S), records[:10])
    seg = segment_for("cam-1", "frames", records[0].ts, SEGMENT_S)
    storage.append(seg.idx, b"\x01" * (ROW.size // 2))  # a crash in the middle of an index row
    storage.sync(seg.idx)
    assert _write(SegmentWriter(storage, SEGMENT_S), records) == (10, 10)
    assert storage.size(seg.idx) == 20 * ROW.size
    assert [g.fields for g in ArchiveReader(storage).read("cam-1", "frames")] == [r.fields for r in records]


def test_a_damaged_record_is_skipped_never_returned_altered(storage):
    records = _records("cam-1", range(3))
    _write(SegmentWriter(storage, SEGMENT_S), records)
    seg = segment_for("cam-1", "frames", records[0].ts, SEGMENT_S)
    path = storage.path(seg.seg)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside record 1's JPEG
    path.write_bytes(bytes(raw))
    assert [g.seq for g in ArchiveReader(storage).read("cam-1", "frames")] == [0, 2]


class FailingSync(LocalStorage):
    def sync(self, name: str) -> None:
        raise OSError(errno.EIO, "Input/output error")


def test_nothing_is_indexed_when_the_sync_fails(tmp_path):
    failing = FailingSync(tmp_path / "archive")
    records = _records("cam-1", range(5))
    with pytest.raises(OSError):
        _write(SegmentWriter(failing, SEGMENT_S), records)
    assert ArchiveReader(failing).count("cam-1", "frames") == 0
    failing.close()


def test_one_writer_per_directory(storage):
    with pytest.raises(ArchiveError, match="another archiver writes to"):
        LocalStorage(storage.root, writer=True)
    LocalStorage(storage.root).close()  # readers need no lock


def test_an_unknown_kind_is_refused(storage):
    with pytest.raises(ValueError, match="kind 'audio' is unknown"):
        list(ArchiveReader(storage).read("cam-1", "audio"))
