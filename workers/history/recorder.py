"""``actionstream history``: the ``events`` consumer group, storing each event once.

For each entry of the events stream: decode (an undecodable entry, or an id unfit for a
file name, goes to the dead-letter stream and is acked), skip it when its id is stored
already, otherwise draw its snapshot (:mod:`workers.history.snapshots`), insert it (an
insert-or-ignore, so a redelivery never makes a second row) and ack after the commit.
The loop's parts are those of the alert forwarder: a stable consumer name (a restart
reads its own pending events first), claim of events pending at another consumer for
``claim_idle_ms`` (a crashed recorder's), reconnect with capped, jittered backoff, for
Redis and for the database alike (nothing is acked while the database is away).
Retention: events older than ``history_retention_days`` are purged now and then.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from typing import Callable, Optional

import redis
import sqlalchemy as sa

from shared import claiming, codec, keys
from shared.ops import DEFAULT_URL
from shared.reading import read_group
from shared.redisio import CONNECTION_ERRORS, add_dead_letter, connect, ensure_group, redact
from shared.settings import Settings
from workers.history.snapshots import snapshot_for
from workers.history.store import EventStore, HistoryError, check_event, redacted

log = logging.getLogger(__name__)

HISTORY_GROUP = "events"
PURGE_EVERY_S = 600.0
DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)


class HistoryRecorder:
    """Follows the events stream in group ``events`` into an :class:`EventStore`."""

    def __init__(self, r: redis.Redis, store: EventStore, consumer: str = "history-1",
                 block_ms: int = 1000, deadletter_maxlen: int = 10000, claim_idle_ms: int = 30_000,
                 retention_s: Optional[float] = None, snapshots: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.r, self.store, self.consumer = r, store, consumer
        self.block_ms, self.claim_idle_ms = block_ms, claim_idle_ms
        self.deadletter_maxlen, self.retention_s, self.snapshots = deadletter_maxlen, retention_s, snapshots
        self.clock = clock
        self.metrics = {"stored": 0, "duplicates": 0, "snapshots": 0, "dead": 0, "claimed": 0,
                        "reconnects": 0, "purged": 0}
        self.backlog = True  # own pending entries first (a restart), then new ones
        self._next_claim = self._next_purge = 0.0
        self._stop = False

    def request_stop(self, *_) -> None:
        self._stop = True

    def run(self, burst: bool = False) -> int:
        """Store events until stopped (``burst``: until nothing is left); events stored."""
        backoff = 0.2
        while not self._stop:
            try:
                ensure_group(self.r, keys.EVENTS_STREAM, HISTORY_GROUP)
                got = self.tick()
                backoff = 0.2
            except (*CONNECTION_ERRORS, *DB_ERRORS) as exc:
                self.metrics["reconnects"] += 1
                what = "database" if isinstance(exc, DB_ERRORS) else "redis"
                log.warning("history %s: %s unreachable (%s); retrying in %.1f s", self.consumer, what,
                            str(exc).splitlines()[0], backoff)
                time.sleep(backoff * (0.5 + random.random()))
                backoff, self.backlog = min(backoff * 2, 10.0), True
                continue
            if burst and not got and not self.backlog:
                break
        return self.metrics["stored"]

    def tick(self) -> int:
        """Purge and claim (now and then), read a batch, store it; entries read."""
        now = self.clock()
        if self.retention_s is not None and now >= self._next_purge:
            self.metrics["purged"] += self.store.purge(self.retention_s)
            self._next_purge = now + PURGE_EVERY_S
        if now >= self._next_claim:
            claimed = claiming.claim(self.r, keys.EVENTS_STREAM, HISTORY_GROUP, self.consumer,
                                     min_idle_ms=self.claim_idle_ms)
            if claimed:
                log.info("history %s: claimed %d event(s) pending at other consumers", self.consumer,
                         claimed)
                self.metrics["claimed"] += claimed
                self.backlog = True
            self._next_claim = now + self.claim_idle_ms / 2000
        entries = []
        if self.backlog:
            entries = self._read("0", None)
            self.backlog = bool(entries)
        if not entries:
            entries = self._read(">", self.block_ms)
        for e in entries:
            self.store_one(e.id, e.fields)
        return len(entries)

    def _read(self, start: str, block: Optional[int]):
        return read_group(self.r, HISTORY_GROUP, self.consumer, {keys.EVENTS_STREAM: start},
                          count=100, block=block)

    def store_one(self, entry_id, fields: dict) -> bool:
        """Store one entry's event (acked after the commit); True when a row was added."""
        try:
            event = check_event(codec.decode_event(fields.get(b"event", b"")))
        except (codec.DecodeError, HistoryError) as exc:
            self._dead_letter(entry_id, fields, f"undecodable event: {exc}")
            return False
        added = False
        if self.store.get(event.id) is None:  # a redelivery needs no second picture
            snapshot = snapshot_for(self.r, event) if self.snapshots else None
            try:
                added = self.store.add(event, snapshot)
            except (sa.exc.DataError, sa.exc.IntegrityError) as exc:  # a row the database refuses
                self._dead_letter(entry_id, fields, f"the database refused the event: {exc.orig}")
                return False
            self.metrics["snapshots"] += int(added and snapshot is not None)
        self.r.xack(keys.EVENTS_STREAM, HISTORY_GROUP, entry_id)
        if added:
            self.metrics["stored"] += 1
            log.info("camera %s track %d: event %s (%s) stored", event.camera, event.track_id,
                     event.id, event.label)
        else:
            self.metrics["duplicates"] += 1
            log.info("camera %s track %d: event %s was stored already", event.camera, event.track_id,
                     event.id)
        return added

    def _dead_letter(self, entry_id, fields: dict, reason: str) -> None:
        pipe = self.r.pipeline()
        add_dead_letter(pipe, HISTORY_GROUP, keys.EVENTS_STREAM, entry_id, fields, reason,
                        self.deadletter_maxlen)
        pipe.xack(keys.EVENTS_STREAM, HISTORY_GROUP, entry_id)
        pipe.execute()
        self.metrics["dead"] += 1
        log.warning("event entry %s: dead-lettered: %s", entry_id, reason)


def run_history(settings: Settings, consumer: Optional[str] = None, burst: bool = False,
                claim_idle_s: Optional[float] = None) -> int:
    """``actionstream history``: store events until stopped (or idle, ``burst``)."""
    url = settings.redis_url or DEFAULT_URL
    consumer = consumer or settings.history_consumer
    store = EventStore.from_settings(settings)
    idle_s = 30.0 if claim_idle_s is None else claim_idle_s
    log.info("history %s: storing events from %s into %s", consumer, redact(url), redacted(store.url))
    recorder = HistoryRecorder(connect(url), store, consumer, deadletter_maxlen=settings.deadletter_maxlen,
                               claim_idle_ms=int(idle_s * 1000),
                               retention_s=settings.history_retention_days * 86400)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, recorder.request_stop)
    try:
        stored = recorder.run(burst=burst)
    finally:
        store.close()
    log.info("history %s: %d event(s) stored, %d duplicate(s), %d dead-lettered", consumer, stored,
             recorder.metrics["duplicates"], recorder.metrics["dead"])
    return 0
