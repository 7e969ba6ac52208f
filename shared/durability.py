"""Durable writes where a loss is permanent (DESIGN invariant 11): confirm with ``WAIT`` (that
many replicas have the writes) and/or ``WAITAOF`` (the server fsynced them to its append-only
file; Valkey / Redis 7.2+) before a writer acknowledges what it wrote.

:class:`Durability.confirm` runs on the node that serves the written keys, in one pipeline
on one connection: ``EXISTS`` of keys the write created (the events' idempotency guards: a
guard and its event are written by one script, so a guard present means its event is
present; after a failover that lost the write they are both absent and the confirmation
fails, where a bare ``WAIT`` on the new primary would confirm nothing), then a small write
(``SET`` of a marker key in the same slot, so this connection's replication offset covers
every earlier write of that node), then ``WAIT replicas ms`` and ``WAITAOF 1 0 ms``. Anything
short of that — a timeout, fewer replicas, AOF off, a missing guard — is a reason, and the
writer retries (never acknowledges, never drops); each outcome is counted in
``actionstream_durable_waits_total{stream,outcome}``. Frames (``durable_frames``) have no
guard: their check is that the producer hash's ``seq``, written by the same script as the
frame, has reached the frame's (``must_reach``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import redis

from shared import keys, metrics
from shared.errors import ActionstreamError
from shared.redisio import is_cluster


class DurabilityError(ActionstreamError):
    """A write not confirmed durable (what :meth:`Durability.confirm` said), so not acknowledged."""


def marker_key(key: str) -> str:
    """A key in ``key``'s hash slot that the confirmation writes to."""
    tag = keys.hash_tag(key)
    return f"{keys.PREFIX}:{{{tag}}}:durable" if tag else f"{key}:durable"


def node_client(r: redis.Redis, key: str) -> redis.Redis:
    """A plain client of the node serving ``key`` (``r`` itself on a single server)."""
    if is_cluster(r):
        return r.get_redis_connection(r.get_node_from_key(key))
    return r


@dataclass(frozen=True)
class Durability:
    """``replicas``: WAIT for that many (0: not); ``aof``: WAITAOF for the local fsync;
    ``timeout_ms``: how long each may wait."""

    replicas: int = 0
    aof: bool = False
    timeout_ms: int = 100

    @property
    def enabled(self) -> bool:
        return self.replicas > 0 or self.aof

    @classmethod
    def for_events(cls, settings) -> "Durability":
        return cls(settings.redis_wait_replicas, settings.redis_wait_aof, settings.redis_wait_ms)

    @classmethod
    def for_frames(cls, settings) -> "Durability":
        """As the events' with ``durable_frames``; else none (frames as durable as the server is)."""
        return cls.for_events(settings) if settings.durable_frames else cls()

    def confirm(self, r: redis.Redis, key: str, must_exist: Sequence[str] = (), what: str = "events",
                must_reach: Optional[tuple[str, str, int]] = None) -> Optional[str]:
        """None once what was written to ``key``'s node is durable as configured (and every key of
        ``must_exist``, in ``key``'s slot, is there; and with ``must_reach`` (hash, field, n) that
        field is n or more: a write that counts up, the producer's next seq); else why not.
        Connection errors propagate."""
        if not self.enabled:
            return None
        pipe = node_client(r, key).pipeline(transaction=False)
        if must_exist:
            pipe.exists(*must_exist)
        if must_reach:
            pipe.hget(must_reach[0], must_reach[1])
        pipe.set(marker_key(key), repr(time.time()), px=3_600_000)
        if self.replicas:
            pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        if self.aof:
            pipe.execute_command("WAITAOF", 1, 0, self.timeout_ms)
        replies = pipe.execute(raise_on_error=False)
        why = self._check(list(replies), len(must_exist), must_reach)
        metrics.DURABLE_WAITS.labels(what, "unconfirmed" if why else "confirmed").inc()
        return why

    def _check(self, replies: list, n_exist: int, must_reach: Optional[tuple[str, str, int]] = None
               ) -> Optional[str]:
        for reply in replies:
            if isinstance(reply, Exception):
                return f"{reply.__class__.__name__}: {reply}"
        if n_exist:
            present = int(replies.pop(0))
            if present < n_exist:
                return f"{n_exist - present} of {n_exist} written key(s) missing (lost in a failover?)"
        if must_reach:
            got = int(replies.pop(0) or 0)
            if got < must_reach[2]:
                return f"{must_reach[0]} {must_reach[1]} is {got}, not {must_reach[2]} (lost in a failover?)"
        replies.pop(0)  # SET
        if self.replicas:
            got = int(replies.pop(0))
            if got < self.replicas:
                return f"WAIT: {got} of {self.replicas} replica(s) within {self.timeout_ms} ms"
        if self.aof:
            local = int(replies.pop(0)[0])
            if local < 1:
                return f"WAITAOF: not fsynced to the append-only file within {self.timeout_ms} ms"
        return None
