"""Housekeeping on a schedule: each jobs worker (``actionstream jobs-worker``) runs a timer
thread, so no extra process (no Celery beat) is needed.

Every ``housekeeping_interval_s`` (0: off) one sweep:

* purges the finished replays (DONE, CANCELLED, FAILED) that ended ``replay_retention_s`` ago
  or more, as ``actionstream replay purge`` does (their Celery result too);
* trims the dead letters older than ``deadletter_max_age_s`` (``XTRIM MINID``: an entry's id
  is the server's time of its write, so the age is the server's, not this host's), beside the
  ``MAXLEN ~`` bound every writer applies;
* removes from their groups the consumers idle ``dead_consumer_idle_s`` or more with nothing
  pending: a stage worker's consumer is named after its host and pid, so each restart adds one
  to every group it read, and a dead worker's would stay forever. A consumer with pending
  entries is never removed (its entries would leave the pending list unprocessed), and the
  check and the removal are one script, so a consumer that reads in between is kept.

Heartbeats (``keys.worker_key``) expire by themselves: one lease TTL after the last beat
(:mod:`shared.heartbeat`; a producer's after 30 s).

Several jobs workers: a sweep first takes :data:`LOCK_KEY` (``SET NX`` for the interval, never
released), so one worker sweeps per interval; every step is idempotent besides, so a sweep cut
short or run twice removes nothing twice and fails on nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import redis

from shared import keys
from shared.durability import node_client
from shared.redisio import CONNECTION_ERRORS, text
from shared.settings import Settings
from workers.jobs import purge, registry

log = logging.getLogger(__name__)

LOCK_KEY = f"{keys.PREFIX}:housekeeping"

# KEYS[1] a stream; ARGV[1] the idle time (ms) from which a consumer with nothing pending is
# removed. Every group's consumers looked at and removed in one script: nothing reads between.
_DROP_IDLE_CONSUMERS = """
local function fields(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
local removed = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local group = fields(g)['name']
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], group)) do
    local con = fields(c)
    if tonumber(con['pending']) == 0 and tonumber(con['idle']) >= tonumber(ARGV[1]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, con['name'])
      removed[#removed + 1] = group .. '/' .. con['name']
    end
  end
end
return removed
"""


@dataclass(frozen=True)
class Swept:
    """What one sweep removed."""

    jobs: tuple[str, ...] = ()
    dead_letters: int = 0
    consumers: tuple[str, ...] = ()  # "stream group/consumer"


def purge_expired_replays(r: redis.Redis, retention_s: float, now: float, backend: Any = None
                          ) -> list[str]:
    """Purge every finished job that ended ``retention_s`` or more before ``now`` (and, with a
    Celery result ``backend``, its result); the ids purged."""
    purged = []
    for job in purge.select_finished(registry.jobs(r), now, retention_s):
        try:
            spec = registry.spec_of(r, job)
        except purge.ReplayError:  # purged by another worker meanwhile
            continue
        purge.purge(r, spec)
        if backend is not None:
            backend.client.delete(backend.get_key_for_task(job))
        purged.append(job)
    return purged


def server_time(r: redis.Redis, key: str) -> float:
    """The clock of the server holding ``key`` (seconds): the one its stream ids come from."""
    secs, micros = node_client(r, key).time()
    return secs + micros / 1e6


def trim_dead_letters(r: redis.Redis, max_age_s: float, now: Optional[float] = None) -> int:
    """XTRIM MINID the dead letters written more than ``max_age_s`` before ``now`` (default:
    the server's clock); how many were removed."""
    now = server_time(r, keys.DEADLETTER_STREAM) if now is None else now
    min_id = f"{max(0, int((now - max_age_s) * 1000))}-0"
    return int(r.xtrim(keys.DEADLETTER_STREAM, minid=min_id, approximate=False))


def drop_idle_consumers(r: redis.Redis, idle_s: float) -> list[str]:
    """Remove from every group of every actionstream stream the consumers idle ``idle_s`` or
    more with nothing pending; ``"stream group/consumer"`` of each one removed."""
    script = r.register_script(_DROP_IDLE_CONSUMERS)
    removed = []
    for stream in r.scan_iter(match=f"{keys.PREFIX}:*", count=1000, _type="stream"):
        try:
            names = script(keys=[stream], args=[int(idle_s * 1000)])
        except redis.ResponseError as exc:  # deleted since the scan (a purge): nothing to do
            log.debug("consumers of %s not swept: %s", text(stream), exc)
            continue
        removed += [f"{text(stream)} {text(n)}" for n in names]
    return removed


def sweep(r: redis.Redis, settings: Settings, now: float, backend: Any = None) -> Swept:
    """One round of housekeeping (the module doc), logged."""
    jobs = purge_expired_replays(r, settings.replay_retention_s, now, backend)
    dead_letters = trim_dead_letters(r, settings.deadletter_max_age_s)
    consumers = drop_idle_consumers(r, settings.dead_consumer_idle_s)
    for job in jobs:
        log.info("housekeeping: replay %s purged (ended over %.0f s ago)", job, settings.replay_retention_s)
    if dead_letters:
        log.info("housekeeping: %d dead letters older than %.0f s trimmed", dead_letters,
                 settings.deadletter_max_age_s)
    for name in consumers:
        log.info("housekeeping: idle consumer %s removed (nothing pending)", name)
    return Swept(tuple(jobs), dead_letters, tuple(consumers))


class Housekeeper:
    """The timer thread: :func:`sweep` every ``housekeeping_interval_s``, by one worker of all
    (:data:`LOCK_KEY`); an error is logged and the next round tries again."""

    def __init__(self, r: redis.Redis, settings: Settings, owner: str, backend: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.r, self.settings, self.owner, self.backend, self.clock = r, settings, owner, backend, clock
        self.interval_s = settings.housekeeping_interval_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "Housekeeper":
        if self.interval_s <= 0:
            log.info("housekeeping off (ACTIONSTREAM_HOUSEKEEPING_INTERVAL_S=0)")
            return self
        self._thread = threading.Thread(target=self._loop, name="housekeeping", daemon=True)
        self._thread.start()
        return self

    def run_once(self) -> Optional[Swept]:
        """A sweep if no worker swept within the interval (else None)."""
        if not self.r.set(LOCK_KEY, self.owner, nx=True, px=max(1, int(self.interval_s * 1000))):
            return None
        return sweep(self.r, self.settings, self.clock(), self.backend)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except CONNECTION_ERRORS as exc:
                log.warning("housekeeping: redis unreachable (%s); next round in %.0f s", exc,
                            self.interval_s)
            except Exception:  # a bug must not end the thread: the next round tries again
                log.exception("housekeeping failed; next round in %.0f s", self.interval_s)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
