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
import signal
import threading
import time
from typing import Callable, Optional

import redis
import sqlalchemy as sa

from shared import codec, keys
from shared.follower import StreamFollower
from shared.redisio import connect, redact
from shared.settings import Settings
from workers.history.snapshots import snapshot_for
from workers.history.store import EventStore, HistoryError, check_event, redacted

log = logging.getLogger(__name__)

HISTORY_GROUP = "events"
PURGE_EVERY_S = 600.0
DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)


class HistoryRecorder(StreamFollower):
    """Follows the events stream in group ``events`` (:class:`StreamFollower`) into an
    :class:`EventStore`; a database away is retried like a lost Redis."""

    group = HISTORY_GROUP
    retry_errors = DB_ERRORS

    def __init__(self, r: redis.Redis, store: EventStore, consumer: str = "history-1",
                 block_ms: int = 1000, deadletter_maxlen: int = 10000, claim_idle_ms: int = 30_000,
                 retention_s: Optional[float] = None, snapshots: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(r, keys.EVENTS_STREAM, consumer, block_ms, deadletter_maxlen, claim_idle_ms, clock)
        self.store, self.retention_s, self.snapshots = store, retention_s, snapshots
        self.metrics.update(stored=0, duplicates=0, snapshots=0, purged=0)
        self._next_purge = 0.0

    def unreachable(self, exc: BaseException) -> str:
        return "database" if isinstance(exc, DB_ERRORS) else "redis"

    def result(self) -> int:
        return self.metrics["stored"]

    def handle(self, entry_id, fields: dict) -> None:
        self.store_one(entry_id, fields)

    def before_read(self, now: float) -> None:
        if self.retention_s is not None and now >= self._next_purge:
            self.metrics["purged"] += self.store.purge(self.retention_s)
            self._next_purge = now + PURGE_EVERY_S

    def store_one(self, entry_id, fields: dict) -> bool:
        """Store one entry's event (acked after the commit); True when a row was added."""
        try:
            event = check_event(codec.decode_event(fields.get(b"event", b"")))
        except (codec.DecodeError, HistoryError) as exc:
            self.dead_letter(entry_id, fields, f"undecodable event: {exc}")
            return False
        added = False
        if self.store.get(event.id) is None:  # a redelivery needs no second picture
            snapshot = snapshot_for(self.r, event) if self.snapshots else None
            try:
                added = self.store.add(event, snapshot)
            except (sa.exc.DataError, sa.exc.IntegrityError) as exc:  # a row the database refuses
                self.dead_letter(entry_id, fields, f"the database refused the event: {exc.orig}")
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


def run_history(settings: Settings, consumer: Optional[str] = None, burst: bool = False,
                claim_idle_s: Optional[float] = None) -> int:
    """``actionstream history``: store events until stopped (or idle, ``burst``)."""
    url = settings.redis_target
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
