"""Heartbeats: a worker's metrics under a key that lives one lease TTL.

A worker that stops beating drops out of :func:`live_workers` within one TTL — the same
time its leases take to expire — so the survivors' fair share grows as the dead worker's
cameras become free, and failover takes one TTL.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from shared import keys


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
