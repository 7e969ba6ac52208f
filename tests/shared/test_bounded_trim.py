"""No silent overflow: a bounded stream written by the fenced write (as the pose stage writes
skeletons) is never trimmed past an entry a consumer group still needs. With the archiver's
group stopped for three times the bound, the action group keeping up, every entry is still
there for the archiver, the writer reports how far over the bound the stream is kept (the
metric and a log line); once the archiver has caught up, the stream shrinks to its bound.
Against a real server, through the real script."""

from __future__ import annotations

import logging

from shared import keys, metrics, writing
from shared.redisio import ensure_group
from shared.worker import Outcome, Output

CAM = "cam-t"
BOUND = 300
STREAM = keys.skeletons_stream(CAM)


def _write(r, script, n: int) -> dict:
    """``n`` entries through the fenced write (one per call), bounded at BOUND."""
    behind = {}
    for i in range(n):
        p = writing.plan(Outcome(outputs=[Output(STREAM, {"i": i}, BOUND)]), keys.POSE_GROUP, {CAM: "w|1"})
        out = writing.execute_fenced(r, script, p)
        assert out[CAM] == writing.OK
        behind = out.get(writing.BEHIND, {})
    return behind


def _consume(r, group: str) -> int:
    """Read and ack everything new for ``group``; how many."""
    got = r.xreadgroup(group, "c", {STREAM: ">"}, count=100_000)
    ids = [eid for _, entries in got for eid, _ in entries]
    if ids:
        r.xack(STREAM, group, *ids)
    return len(ids)


def test_without_groups_the_stream_stays_near_its_bound(r):
    r.set(keys.lease_key(keys.POSE_GROUP, CAM), "w|1")
    script = r.register_script(writing.FENCED_WRITE)
    assert _write(r, script, 3 * BOUND) == {}
    assert BOUND <= r.xlen(STREAM) <= BOUND + 100  # approximate trimming, by whole nodes


def test_a_stopped_archiver_loses_nothing_and_is_reported(r):
    r.set(keys.lease_key(keys.POSE_GROUP, CAM), "w|1")
    script = r.register_script(writing.FENCED_WRITE)
    for group in (keys.ACTION_GROUP, keys.ARCHIVE_GROUP):
        ensure_group(r, STREAM, group)
    done = 0
    for _ in range(3):  # the action stage keeps up; the archiver is stopped
        behind = _write(r, script, BOUND)
        done += _consume(r, keys.ACTION_GROUP)
    assert done == 3 * BOUND and r.xlen(STREAM) == 3 * BOUND  # MAXLEN ~ 300 would have kept ~300
    assert behind == {STREAM: (2 * BOUND, keys.ARCHIVE_GROUP)}

    # a pending (read, unacked) entry of the archiver is kept too
    r.xreadgroup(keys.ARCHIVE_GROUP, "arch", {STREAM: ">"}, count=10)
    assert _consume(r, keys.ARCHIVE_GROUP) == 3 * BOUND - 10  # all but the 10 pending ones
    _write(r, script, 1)
    _consume(r, keys.ACTION_GROUP)
    first = r.xrange(STREAM, count=1)[0][0]
    pending = r.xpending_range(STREAM, keys.ARCHIVE_GROUP, "-", "+", 10)
    assert first <= pending[0]["message_id"]

    r.xack(STREAM, keys.ARCHIVE_GROUP, *[p["message_id"] for p in pending])
    assert _write(r, script, 1) == {}  # caught up: trimmed back towards the bound
    assert BOUND <= r.xlen(STREAM) <= BOUND + 100


def test_the_worker_reports_a_group_behind_in_the_metric_and_the_log(caplog):
    from shared.writing import BehindReport

    report = BehindReport("pose-1")  # what a StageWorker calls after each write
    with caplog.at_level(logging.WARNING):
        report({STREAM: (250, "archive")}, {STREAM})
        report({STREAM: (260, "archive")}, {STREAM})  # warned once a minute, counted each time
    assert metrics.STREAM_BEHIND.labels(STREAM, "archive")._value.get() == 260
    assert sum("over its bound for group 'archive'" in m for m in caplog.messages) == 1
    report({}, {STREAM})
    assert metrics.STREAM_BEHIND.labels(STREAM, "archive")._value.get() == 0


