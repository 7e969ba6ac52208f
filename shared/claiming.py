"""Claiming pending entries: on a takeover (all of them) and from dead consumers (stale ones).

JUSTID leaves the delivery counters alone: only real deliveries (XREADGROUP) count
towards a worker's ``max_deliveries``.
"""

from __future__ import annotations

from typing import Iterable

import redis

from shared.redisio import text


def _next_id(entry_id) -> str:
    ms, _, seq = text(entry_id).partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def claim(r: redis.Redis, stream: str, group: str, consumer: str, min_idle_ms: int = 0,
          page: int = 1000) -> int:
    """Move the pending entries of ``group`` on ``stream`` idle for ``min_idle_ms`` or more
    to ``consumer``; the number moved. ``min_idle_ms=0``: every pending entry (a takeover:
    the camera's lease says they are ours now)."""
    start, total = "0-0", 0
    while True:
        ids = r.xautoclaim(stream, group, consumer, min_idle_time=min_idle_ms, start_id=start,
                           count=page, justid=True)
        total += len(ids)
        if len(ids) < page:
            return total
        start = _next_id(ids[-1])


def delivery_counts(r: redis.Redis, stream: str, group: str, ids: Iterable[str]) -> dict[str, int]:
    """How often each of ``ids`` (pending entries of ``stream``, in order) was delivered."""
    ids = list(ids)
    if not ids:
        return {}
    rows = r.xpending_range(stream, group, min=ids[0], max=ids[-1], count=len(ids))
    return {text(p["message_id"]): int(p["times_delivered"]) for p in rows}
