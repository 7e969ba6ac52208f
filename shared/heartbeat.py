"""Heartbeats: a worker's metrics under a key that lives one lease TTL.

A worker that stops beating drops out of :func:`live_workers` within one TTL — the same
time its leases take to expire — so the survivors' fair share grows as the dead worker's
cameras become free, and failover takes one TTL.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Optional

import redis

from shared import keys

log = logging.getLogger(__name__)


def beat(r: redis.Redis, worker_id: str, stage: str, metrics: dict[str, Any], cameras: list[str],
         at: float, ttl_s: float) -> None:
    """Write this worker's heartbeat (expires after ``ttl_s``)."""
    doc = dict(metrics, worker=worker_id, stage=stage, cameras=cameras, at=at)
    r.set(keys.worker_key(worker_id), json.dumps(doc), px=max(100, int(ttl_s * 1000)))


def stop(r: redis.Redis, worker_id: str) -> None:
    r.delete(keys.worker_key(worker_id))


def live_workers(r: redis.Redis, stage: str) -> int:
    """Workers of ``stage`` with a current heartbeat."""
    n = 0
    for key in r.scan_iter(match=keys.worker_pattern(), count=500):
        raw = r.get(key)
        try:
            n += bool(raw) and json.loads(raw).get("stage") == stage
        except ValueError:
            continue
    return n


def fair_share(cameras: int, workers: int, max_cameras: int) -> int:
    """How many of ``cameras`` one of ``workers`` live workers should hold (rounded up)."""
    return min(max_cameras, -(-cameras // max(1, workers)))


class Beater:
    """A daemon thread that beats for a process without a loop of its own (a Celery worker),
    every third of ``ttl_s``, so ``actionstream status`` lists it; :meth:`stop` removes it."""

    def __init__(self, r: redis.Redis, worker_id: str, stage: str, metrics: dict[str, Any],
                 ttl_s: float) -> None:
        self.r, self.worker_id, self.stage, self.metrics, self.ttl_s = r, worker_id, stage, metrics, ttl_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "Beater":
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.stage}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                beat(self.r, self.worker_id, self.stage, self.metrics, [], time.time(), self.ttl_s)
            except redis.RedisError as exc:  # away for a while: the next beat tries again
                log.debug("heartbeat of %s not written: %s", self.worker_id, exc)
            self._stop.wait(self.ttl_s / 3)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            stop(self.r, self.worker_id)
        except redis.RedisError as exc:
            log.debug("heartbeat of %s not removed: %s", self.worker_id, exc)
