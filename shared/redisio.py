"""Small Redis helpers shared by every process: connecting, consumer groups, dead letters.

Leases live in :mod:`shared.leases`, heartbeats in :mod:`shared.heartbeat`.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

import redis

from shared import codec, keys

log = logging.getLogger(__name__)

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
