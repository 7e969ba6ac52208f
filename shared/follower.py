"""Following one stream in a consumer group, entry by entry: the loop of the processes that
read the global events stream (the alert forwarder, the history recorder).

The loop's parts are the stages' (:mod:`shared.claiming`, :mod:`shared.reading`): a stable
consumer name, so a restart reads its own pending entries first (the backlog); claim of
entries pending at another consumer for longer than ``claim_idle_ms`` (a crashed pod's);
reconnect with capped, jittered backoff. A subclass handles one entry at a time
(:meth:`StreamFollower.handle`) and acks it when its effect is done, or dead-letters it.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import redis

from shared import claiming, metrics
from shared.backoff import backoff_delay
from shared.reading import read_group
from shared.redisio import CONNECTION_ERRORS, add_dead_letter, ensure_group, is_cluster

log = logging.getLogger(__name__)


class StreamFollower:
    """Reads ``stream`` in group ``group`` as ``consumer`` and hands each entry to
    :meth:`handle`. ``retry_errors``: besides lost connections, errors after which the loop
    backs off and reads its backlog again (nothing was acked); ``clock`` (monotonic) times
    the claims and :meth:`before_read`."""

    group: str = ""
    retry_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, r: redis.Redis, stream: str, consumer: str, block_ms: int = 1000,
                 deadletter_maxlen: int = 10000, claim_idle_ms: int = 30_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.r, self.stream, self.consumer = r, stream, consumer
        self.block_ms, self.claim_idle_ms, self.deadletter_maxlen = block_ms, claim_idle_ms, deadletter_maxlen
        self.monotonic = clock
        self.metrics = {"dead": 0, "claimed": 0, "reconnects": 0}
        self.backlog = True  # own pending entries first (a restart), then new ones
        self._next_claim = 0.0
        self._stop = False

    # -- hooks ----------------------------------------------------------------------------
    def handle(self, entry_id, fields: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def before_read(self, now: float) -> None:
        """Called at each tick before reading (housekeeping)."""

    def after_read(self) -> None:
        """Called at each tick after the entries read were handled."""

    def unreachable(self, exc: BaseException) -> str:
        """What a retried error says is away (for the log and the reconnect metric)."""
        return "redis"

    def result(self) -> int:
        """What :meth:`run` returns."""
        return 0

    # -- loop -----------------------------------------------------------------------------
    def request_stop(self, *_) -> None:
        self._stop = True

    def run(self, burst: bool = False) -> int:
        """Follow until stopped (``burst``: until nothing is left); :meth:`result`."""
        attempt = 0  # failed ticks in a row: the backoff's exponent
        while not self._stop:
            try:
                ensure_group(self.r, self.stream, self.group)
                got = self.tick()
                attempt = 0
            except (*CONNECTION_ERRORS, *self.retry_errors) as exc:
                what = self.unreachable(exc)
                self.metrics["reconnects"] += 1
                metrics.RECONNECTS.labels(self.group, what).inc()
                delay = backoff_delay(attempt, 0.2, 10.0)
                log.warning("%s %s: %s unreachable (%s); retrying in %.1f s", self.group, self.consumer,
                            what, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, delay)
                time.sleep(delay)
                attempt, self.backlog = attempt + 1, True
                continue
            if burst and not got and not self.backlog:
                break
        return self.result()

    def tick(self) -> int:
        """Housekeeping and claims (now and then), read a batch, handle it; entries read."""
        now = self.monotonic()
        self.before_read(now)
        if now >= self._next_claim:
            claimed = claiming.claim(self.r, self.stream, self.group, self.consumer,
                                     min_idle_ms=self.claim_idle_ms)
            if claimed:
                log.info("%s %s: claimed %d entries pending at other consumers", self.group,
                         self.consumer, claimed)
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
            self.handle(e.id, e.fields)
        self.after_read()
        return len(entries)

    def _read(self, start: str, block: Optional[int]):
        return read_group(self.r, self.group, self.consumer, {self.stream: start}, count=100, block=block)

    def dead_letter(self, entry_id, fields: dict, reason: str) -> None:
        """Put the entry on the dead-letter stream with ``reason`` and ack it."""
        pipe = self.r.pipeline(transaction=not is_cluster(self.r))  # on a cluster: two slots, in order
        add_dead_letter(pipe, self.group, self.stream, entry_id, fields, reason, self.deadletter_maxlen)
        pipe.xack(self.stream, self.group, entry_id)
        pipe.execute()
        self.metrics["dead"] += 1
        metrics.count_dead(self.group, [reason])
        log.warning("%s: entry %s dead-lettered: %s", self.group, entry_id, reason)
