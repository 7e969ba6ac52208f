"""Small Redis helpers shared by every process: connecting, consumer groups, leases.

A lease gives one worker a camera for one stage (DESIGN.md invariant 2): a key set with
``NX`` and a TTL, renewed while the worker lives, deleted when it stops. Renewal and
release only touch a lease that still holds this worker's id.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

import redis

from shared import codec, keys

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)


def connect(url: str, timeout: float = 5.0) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` for TLS, user:password allowed).

    Nothing is sent until the first command; bytes are returned undecoded.
    """
    return redis.Redis.from_url(
        url, socket_timeout=timeout + 30.0, socket_connect_timeout=timeout,
        health_check_interval=15, retry_on_timeout=False,
    )


def redact(url: str) -> str:
    """``url`` with any password replaced, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}"


def add_dead_letter(pipe, stage: str, stream: str, entry_id: Any, fields: dict, reason: str,
                    maxlen: int) -> None:
    """Queue on ``pipe`` the dead-letter entry for ``entry_id`` of ``stream`` with its reason."""
    dl = codec.dead_letter_for(stage, stream, entry_id, fields, reason)
    pipe.xadd(keys.DEADLETTER_STREAM, codec.encode_dead_letter(dl), maxlen=maxlen,
              approximate=True)


def ensure_group(r: redis.Redis, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` from its start (creating the stream); fine if it exists."""
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def group_lag(r: redis.Redis, stream: str, group: str) -> Optional[int]:
    """Entries of ``stream`` not yet delivered to ``group`` plus those pending (unacked);
    None when ``group`` does not exist (nobody consumes the stream)."""
    try:
        groups = r.xinfo_groups(stream)
    except redis.ResponseError:
        return None
    for g in groups:
        name = g.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            lag = g.get("lag")
            if lag is None:  # the server cannot tell (e.g. after deletions): count entries
                lag = r.xlen(stream)
            return int(lag) + int(g.get("pending", 0))
    return None


class Leases:
    """This worker's leases on cameras for one stage."""

    def __init__(self, r: redis.Redis, stage: str, worker_id: str, ttl_s: float) -> None:
        self.r = r
        self.stage = stage
        self.worker_id = worker_id
        self.ttl_ms = int(ttl_s * 1000)
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)

    def try_acquire(self, camera: str) -> bool:
        return bool(self.r.set(keys.lease_key(self.stage, camera), self.worker_id, nx=True,
                               px=self.ttl_ms))

    def renew(self, camera: str) -> bool:
        return bool(self._renew(keys=[keys.lease_key(self.stage, camera)],
                                args=[self.worker_id, self.ttl_ms]))

    def release(self, camera: str) -> None:
        self._release(keys=[keys.lease_key(self.stage, camera)], args=[self.worker_id])

    def holder(self, camera: str) -> str | None:
        value = self.r.get(keys.lease_key(self.stage, camera))
        return value.decode() if value is not None else None


def registered_cameras(r: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in r.hkeys(keys.CAMERAS_KEY))


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def stream_entries(resp: Iterable) -> list[tuple[str, str, dict]]:
    """Flatten an XREAD/XREADGROUP reply into (stream, id, fields)."""
    out = []
    for stream, entries in resp or []:
        for entry_id, fields in entries:
            if fields is None:  # deleted while pending
                continue
            out.append((text(stream), text(entry_id), fields))
    return out


def processed_tail(r: redis.Redis, stream: str, group: str, count: int) -> list[tuple[bytes, dict]]:
    """The last ``count`` entries ``group`` has processed on ``stream``, oldest first.

    Processed = delivered and acked: before the oldest pending entry, or up to the group's
    last delivered id when nothing is pending. Used to rebuild state after a takeover.
    """
    pending = r.xpending(stream, group)
    if pending and pending.get("pending"):
        end = "(" + text(pending["min"])
    else:
        last = None
        for g in r.xinfo_groups(stream):
            if text(g.get("name")) == group:
                last = text(g.get("last-delivered-id"))
        if not last or last == "0-0":
            return []
        end = last
    return list(reversed(r.xrevrange(stream, max=end, min="-", count=count)))


def live_workers(r: redis.Redis, stage: str) -> int:
    """Workers of ``stage`` with a current heartbeat."""
    import json

    n = 0
    for key in r.scan_iter(match=keys.worker_pattern(), count=500):
        raw = r.get(key)
        try:
            n += bool(raw) and json.loads(raw).get("stage") == stage
        except ValueError:
            continue
    return n
