"""Retention deletes whole segments, the oldest first, by age and by size per camera."""

from __future__ import annotations

import pytest

from tests.workers.archive.archive_helpers import T0
from tests.workers.archive.test_archive_segments import SEGMENT_S, _records, _write
from workers.archive import retention
from workers.archive.reader import ArchiveReader
from workers.archive.segments import Segment, SegmentWriter
from workers.archive.storage import LocalStorage


def _seg(camera: str, kind: str, start: int, size: int = 100) -> retention.Sized:
    return retention.Sized(Segment(camera, kind, start, start + 60), size)


SEGMENTS = [_seg("a", "frames", 0), _seg("a", "skeletons", 0, 10), _seg("a", "frames", 60),
            _seg("a", "frames", 120), _seg("a", "skeletons", 120, 10), _seg("b", "frames", 0, 500)]


@pytest.mark.parametrize("now, max_age_s, max_bytes, expected", [
    (200, 1000, 10_000, []),                                                   # nothing old, nothing big
    (200, 100, 10_000, [("a", "frames", 0), ("a", "skeletons", 0), ("b", "frames", 0)]),  # ended <= 100
    (200, 80, 10_000, [("a", "frames", 0), ("a", "skeletons", 0), ("b", "frames", 0),
                       ("a", "frames", 60)]),
    (200, 1000, 250, [("a", "frames", 0)]),                                    # a: 320 -> 220
    (200, 1000, 200, [("a", "frames", 0), ("a", "skeletons", 0), ("a", "frames", 60)]),  # a: 320 -> 110
    (200, 1000, 320, []),                                                      # exactly at the limit
    (200, 1000, 1, [("a", "frames", 0), ("a", "skeletons", 0), ("a", "frames", 60)]),  # newest kept
])
def test_plan_deletes_the_oldest_segments_first(now, max_age_s, max_bytes, expected):
    doomed = retention.plan(SEGMENTS, now, retention.Limits(max_age_s, max_bytes))
    assert [(s.camera, s.kind, s.start) for s in doomed] == expected


def test_apply_removes_the_oldest_segments_of_a_real_archive(tmp_path):
    storage = LocalStorage(tmp_path / "archive", writer=True)
    writer = SegmentWriter(storage, SEGMENT_S)
    _write(writer, _records("cam-1", range(60)))  # three segments of 20 frames
    _write(writer, _records("cam-2", range(20)))
    sizes = {s.segment: s.bytes for s in retention.sized_segments(storage)}
    one = max(sizes.values())
    limits = retention.Limits(max_age_s=10**9, max_bytes=2 * one)  # cam-1 must lose exactly its oldest
    deleted = retention.apply(storage, T0 + 10, limits, forget=writer.forget)
    assert [(s.camera, s.start) for s in deleted] == [("cam-1", int(T0))]
    reader = ArchiveReader(storage)
    assert [g.seq for g in reader.read("cam-1", "frames")] == list(range(20, 60))
    assert reader.count("cam-2", "frames") == 20
    by_age = retention.apply(storage, T0 + 4 + 3600, retention.Limits(3600, 10**12), forget=writer.forget)
    assert [(s.camera, s.start) for s in by_age] == [("cam-2", int(T0)), ("cam-1", int(T0) + 2)]  # oldest 1st
    assert [g.seq for g in reader.read("cam-1", "frames")] == list(range(40, 60))
    assert _write(writer, _records("cam-2", range(20))) == (20, 0)  # forgotten: written anew, no "duplicates"
    storage.close()
