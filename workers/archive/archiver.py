"""``actionstream archive``: the ``archive`` consumer group on each stream it keeps, into segments.

Streams kept: ``frames:{cam}`` and ``skeletons:{cam}`` of every registered live camera
(replay cameras, ``<camera>~<job>``, never), re-listed every few seconds, and the global
events stream, split per camera by the event's camera. The loop's parts are the stream
followers' (:mod:`shared.follower`): a stable consumer name, so a restart reads its own
pending entries first; claim of entries pending at another consumer for ``claim_idle_ms``;
reconnect with capped, jittered backoff. An entry is acked only once its record and index
row are fsync'd (:class:`SegmentWriter`); a redelivered entry is not stored twice.

A write that fails (a full disk: ENOSPC/EDQUOT) is one ERROR line naming the camera and the
archive; that camera's kind is left alone for ``retry_s`` (its entries stay pending in
Redis, nothing is lost while the stream holds them) and the other cameras and kinds go on.
The live path never waits on the archive. Retention runs every 5 minutes (:mod:`retention`).

On a Redis Cluster the kept streams sit on many slots: the read is one XREADGROUP per slot
(:func:`shared.redisio.xread_any`), the acks and dead letters one cluster pipeline (split per node).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import redis

from shared import claiming, codec, heartbeat, keys, metrics
from shared.backoff import backoff_delay
from shared.reading import batch_count
from shared.redisio import (CONNECTION_ERRORS, add_dead_letter, connect, ensure_group, group_lag, redact,
                            registered_cameras, text, xread_any)
from shared.schemas import EndOfStream
from shared.settings import Settings
from workers.archive import retention
from workers.archive.segments import Record, Segment, SegmentWriter, segment_for
from workers.archive.storage import Storage, is_disk_full, open_storage

log = logging.getLogger(__name__)

GROUP = keys.ARCHIVE_GROUP
READ_COUNT = 50  # entries per stream in one read (frames are tens of kB each) ...
READ_MAX = 500  # ... and over all streams (many cameras: fewer each)
RELIST_S = 5.0
RETENTION_EVERY_S = 300.0  # a walk over the archive's files
BEAT_S = 2.0


@dataclass
class Kept:
    """A stream the archiver keeps; ``cursor``: reading its own pending entries after this id
    (a restart, a claim, a retry), None: new entries."""

    kind: str
    camera: Optional[str]  # None: the events stream (entries name their camera)
    cursor: Optional[str] = "0"


@dataclass
class Batch:
    acks: dict[str, list[str]] = field(default_factory=dict)
    dead: list[tuple[str, str, dict, str]] = field(default_factory=list)
    segments: dict[Segment, list[tuple[str, Record]]] = field(default_factory=dict)

    def ack(self, stream: str, entry_id: str) -> None:
        self.acks.setdefault(stream, []).append(entry_id)


def to_record(kind: str, camera: Optional[str], entry_id: str, fields: dict) -> Optional[Record]:
    """The record of a stream entry (None: nothing to keep, an end of stream or a replay's
    event); :class:`codec.DecodeError` when it cannot be indexed (dead letter)."""
    if kind == "events":
        raw = fields.get(b"event", fields.get("event"))
        if raw is None:
            raise codec.DecodeError("field 'event' is missing")
        event = codec.decode_event(raw)
        if keys.is_replay(event.camera):
            return None
        try:
            keys.check_camera_id(event.camera)
        except ValueError as exc:
            raise codec.DecodeError(str(exc)) from None
        return Record(event.camera, kind, entry_id, event.frame_end, event.ts_end, fields)
    msg = (codec.decode_frame if kind == "frames" else codec.decode_skeletons)(fields)
    if msg.camera != camera:
        raise codec.DecodeError(f"message names camera {msg.camera!r} on {camera!r}'s stream")
    if isinstance(msg, EndOfStream):
        return None
    return Record(camera, kind, entry_id, msg.seq, msg.ts, fields)


class Archiver:
    """Follows the kept streams in group ``archive`` as ``consumer`` into ``storage``.
    ``clock``: wall time (retention, heartbeats); ``monotonic``: the loop's timers."""

    def __init__(self, r: redis.Redis, storage: Storage, settings: Settings, consumer: str = "archive-1",
                 block_ms: int = 1000, claim_idle_ms: int = 30_000, retry_s: float = 5.0,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.r, self.storage, self.settings, self.consumer = r, storage, settings, consumer
        self.block_ms, self.claim_idle_ms, self.retry_s = block_ms, claim_idle_ms, retry_s
        self.clock, self.monotonic = clock, monotonic
        self.writer = SegmentWriter(storage, settings.archive_segment_s)
        self.limits = retention.Limits(settings.archive_max_age_h * 3600, settings.archive_max_bytes)
        self.kept: dict[str, Kept] = {}
        self.blocked: dict[tuple[str, str], float] = {}  # (camera, kind) -> next try (monotonic)
        self.failing: set[tuple[str, str]] = set()  # until a write succeeds again
        self.metrics: dict = {"stored": 0, "duplicates": 0, "skipped": 0, "dead": 0, "lost": 0, "claimed": 0,
                              "write_errors": 0, "segments_deleted": 0, "reconnects": 0, "disk_full": []}
        self._next = {"relist": 0.0, "claim": 0.0, "retention": 0.0, "beat": 0.0}
        self._stop = False

    def request_stop(self, *_) -> None:
        self._stop = True

    # ---------------------------------------------------------------- loop

    def run(self, burst: bool = False, max_items: Optional[int] = None) -> int:
        """Archive until stopped (``burst``: until nothing is left to read; ``max_items``:
        after that many entries); the entries handled."""
        done, attempt = 0, 0  # attempt: failed ticks in a row, the backoff's exponent
        while not self._stop:
            try:
                got = self.tick()
                attempt = 0
            except CONNECTION_ERRORS as exc:
                self.metrics["reconnects"] += 1
                metrics.RECONNECTS.labels(GROUP, "redis").inc()
                delay = backoff_delay(attempt, 0.2, 10.0)
                log.warning("archive %s: redis unreachable (%s); retrying in %.1f s", self.consumer,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__, delay)
                time.sleep(delay)
                attempt += 1
                for kept in self.kept.values():
                    kept.cursor = "0"
                continue
            done += got
            if max_items is not None and done >= max_items:
                break
            if burst and not got and not any(k.cursor for k in self.kept.values() if self._readable(k)):
                break
        self._beat(final=True)
        return done

    def tick(self) -> int:
        """Housekeeping (now and then), read a batch, store it, ack it; the entries read."""
        self._housekeeping(self.monotonic())
        entries = self._read()
        if entries:
            self._store(entries)
        return len(entries)

    def _housekeeping(self, now: float) -> None:
        if now >= self._next["relist"]:
            self.relist()
            self._measure_lag()
            self._next["relist"] = now + RELIST_S
        if now >= self._next["claim"]:
            self._claim()
            self._next["claim"] = now + self.claim_idle_ms / 2000
        if now >= self._next["retention"]:
            self.apply_retention()
            self._next["retention"] = now + RETENTION_EVERY_S
        for (camera, kind), at in list(self.blocked.items()):
            if now >= at:  # try again: the pending entries first
                del self.blocked[(camera, kind)]
                stream = keys.EVENTS_STREAM if kind == "events" else keys.archived_streams(camera)[kind]
                if stream in self.kept:
                    self.kept[stream].cursor = "0"
        if now >= self._next["beat"]:
            self._beat()
            self._next["beat"] = now + BEAT_S

    def relist(self) -> None:
        """Keep the streams of cameras registered since (a group created from their start)."""
        wanted = {keys.EVENTS_STREAM: Kept("events", None)}
        for camera in registered_cameras(self.r):
            if keys.is_replay(camera):
                continue
            try:
                wanted.update({s: Kept(kind, camera) for kind, s in keys.archived_streams(camera).items()})
            except ValueError as exc:
                log.warning("archive: registered camera %r skipped: %s", camera, exc)
        for stream, kept in wanted.items():
            if stream not in self.kept:
                ensure_group(self.r, stream, GROUP)
                self.kept[stream] = kept
                if kept.camera:
                    log.info("archive %s: camera %s %s archived from now on", self.consumer, kept.camera,
                             kept.kind)

    def _measure_lag(self) -> None:
        """The frames each camera has waiting for the archive (the stages' lag gauge)."""
        for stream, kept in self.kept.items():
            if kept.kind == "frames":
                lag = group_lag(self.r, stream, GROUP)
                if lag is not None:
                    metrics.STREAM_LAG.labels(GROUP, kept.camera).set(lag)

    def _claim(self) -> None:
        for stream, kept in self.kept.items():
            n = claiming.claim(self.r, stream, GROUP, self.consumer, min_idle_ms=self.claim_idle_ms)
            if n:
                log.info("archive %s: claimed %d entries of %s pending at other consumers", self.consumer, n,
                         stream)
                self.metrics["claimed"] += n
                kept.cursor = "0"

    def apply_retention(self) -> None:
        try:
            deleted = retention.apply(self.storage, self.clock(), self.limits, forget=self.writer.forget)
        except OSError as exc:
            log.warning("archive %s: retention failed: %s", self.storage, exc)
            return
        self.metrics["segments_deleted"] += len(deleted)

    # ---------------------------------------------------------------- read

    def _readable(self, kept: Kept) -> bool:
        return kept.camera is None or (kept.camera, kept.kind) not in self.blocked

    def _read(self) -> list[tuple[str, str, Optional[dict]]]:
        """Own pending entries first (no wait), else new ones (waiting up to ``block_ms``)."""
        backlog = {s: k.cursor for s, k in self.kept.items() if k.cursor and self._readable(k)}
        if backlog:
            got = self._xread(backlog, None)
            for stream in backlog:
                last = [i for s, i, _ in got if s == stream]
                self.kept[stream].cursor = last[-1] if last else None
            if got:
                return got
        fresh = {s: ">" for s, k in self.kept.items() if k.cursor is None and self._readable(k)}
        if not fresh:
            time.sleep(self.block_ms / 1000)
            return []
        return self._xread(fresh, self.block_ms)

    def _xread(self, streams: dict[str, str], block: Optional[int]) -> list[tuple[str, str, Optional[dict]]]:
        count = batch_count(READ_COUNT, READ_MAX, len(streams))  # on a cluster: a read per hash slot
        resp = xread_any(self.r, streams, count, block, group=GROUP, consumer=self.consumer)
        return [(text(s), text(i), f or None) for s, entries in resp or [] for i, f in entries]

    # ---------------------------------------------------------------- store

    def _store(self, entries: list[tuple[str, str, Optional[dict]]]) -> None:
        """Write the entries' records (each segment fsync'd), then ack what is on disk."""
        batch = Batch()
        for stream, entry_id, fields in entries:
            self._sort(batch, stream, entry_id, fields)
        for segment, items in batch.segments.items():
            self._write(batch, segment, items)
        self._ack(batch)

    def _ack(self, batch: Batch) -> None:
        """Dead letters and acks, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for stream, entry_id, fields, reason in batch.dead:
            add_dead_letter(pipe, GROUP, stream, entry_id, fields, reason, self.settings.deadletter_maxlen)
            log.warning("archive: entry %s of %s dead-lettered: %s", entry_id, stream, reason)
        for stream, ids in batch.acks.items():
            pipe.xack(stream, GROUP, *ids)
        pipe.execute()
        metrics.count_dead(GROUP, [reason for *_, reason in batch.dead])
        self.metrics["dead"] += len(batch.dead)

    def _sort(self, batch: Batch, stream: str, entry_id: str, fields: Optional[dict]) -> None:
        """Put one entry where it goes: a segment, the acks (nothing to keep) or the dead letters."""
        kept = self.kept[stream]
        if fields is None:  # trimmed from the stream before it was archived: gone
            self.metrics["lost"] += 1
            log.warning("archive: entry %s of %s was trimmed before it was archived", entry_id, stream)
            batch.ack(stream, entry_id)
            return
        try:
            rec = to_record(kept.kind, kept.camera, entry_id, fields)
        except codec.DecodeError as exc:
            batch.dead.append((stream, entry_id, fields, f"undecodable {kept.kind} entry: {exc}"))
            batch.ack(stream, entry_id)
            return
        if rec is None:
            self.metrics["skipped"] += 1
            batch.ack(stream, entry_id)
            return
        seg = segment_for(rec.camera, rec.kind, rec.ts, self.settings.archive_segment_s)
        batch.segments.setdefault(seg, []).append((stream, rec))

    def _write(self, batch: Batch, segment: Segment, items: list[tuple[str, Record]]) -> None:
        what = (segment.camera, segment.kind)
        if what in self.blocked:  # failed earlier (this batch or before): left pending, in order
            return
        try:
            stored, dupes = self.writer.write(segment, [rec for _, rec in items])
        except OSError as exc:
            self._failed(segment, exc)
            return
        if what in self.failing:
            self.failing.discard(what)
            log.info("archive: camera %s %s written to %s again", segment.camera, segment.kind, self.storage)
        for stream, rec in items:
            batch.ack(stream, rec.entry_id)
        self.metrics["stored"] += stored
        self.metrics["duplicates"] += dupes
        metrics.FRAMES_OUT.labels(GROUP, segment.camera).inc(len(items))

    def _failed(self, segment: Segment, exc: OSError) -> None:
        what = (segment.camera, segment.kind)
        self.blocked[what] = self.monotonic() + self.retry_s
        self.metrics["write_errors"] += 1
        metrics.RECONNECTS.labels(GROUP, "disk").inc()
        if what not in self.failing:
            self.failing.add(what)
            problem = "archive disk full" if is_disk_full(exc) else "archive write failed"
            log.error("%s: camera %s %s not archived in %s (%s); its entries stay pending in Redis, "
                      "retrying every %.0f s; the live pipeline goes on", problem, segment.camera,
                      segment.kind, self.storage, exc.strerror or exc, self.retry_s)
        else:
            log.debug("archive: camera %s %s still not writable: %s", segment.camera, segment.kind, exc)

    # ---------------------------------------------------------------- heartbeat

    def _beat(self, final: bool = False) -> None:
        self.metrics["disk_full"] = sorted({c for c, _ in self.failing})
        self.metrics["state"] = "stopped" if final else ("disk full" if self.failing else "running")
        cameras = sorted({k.camera for k in self.kept.values() if k.camera})
        try:
            if final:
                heartbeat.stop(self.r, self.consumer)
            else:
                heartbeat.beat(self.r, self.consumer, GROUP, dict(self.metrics), cameras, self.clock(),
                               max(10.0, self.settings.lease_ttl_s))
        except CONNECTION_ERRORS as exc:
            log.debug("archive: heartbeat not written: %s", exc)


def run_archive(settings: Settings, consumer: str = "archive-1", burst: bool = False,
                max_items: Optional[int] = None, metrics_url: Optional[str] = None) -> int:
    """``actionstream archive``: archive until stopped (or idle, ``burst``)."""
    url = settings.redis_target
    storage = open_storage(settings, writer=True)
    log.info("archive %s: archiving from %s into %s (segments of %d s, kept %.0f h and %d bytes per camera)",
             consumer, redact(url), storage, settings.archive_segment_s, settings.archive_max_age_h,
             settings.archive_max_bytes)
    archiver = Archiver(connect(url), storage, settings, consumer)
    archiver.metrics["metrics_url"] = metrics_url  # `actionstream status` scrapes it
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, archiver.request_stop)
    try:
        n = archiver.run(burst=burst, max_items=max_items)
    finally:
        storage.close()
    m = archiver.metrics
    log.info("archive %s: %d entries read, %d stored, %d duplicate(s), %d dead-lettered, %d segment(s) "
             "deleted",
             consumer, n, m["stored"], m["duplicates"], m["dead"], m["segments_deleted"])
    return 0
