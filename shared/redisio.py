"""Small Redis helpers shared by every process: connecting, consumer groups, dead letters.

Leases live in :mod:`shared.leases`, heartbeats in :mod:`shared.heartbeat`.
"""

from __future__ import annotations

import json

import logging
import time
from typing import Any, Callable, Hashable, Iterable, Optional, Protocol, TypeVar, Union
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from shared import codec, keys
from shared.errors import ActionstreamError

log = logging.getLogger(__name__)

# a cluster failing over: no node answers, a slot is not covered, CLUSTERDOWN, TRYAGAIN
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError,
                     RedisClusterException, redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError)
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
# a node answered for a slot it no longer serves, or the cluster is failing over
TOPOLOGY_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.AskError,
                   redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError)

K = TypeVar("K")


class TopologyChanged(ActionstreamError, redis.ConnectionError):
    """A cluster node failed or gave its slots away mid-read: reconnect and read again."""


class RedisTarget(Protocol):
    """What names a Redis: :class:`shared.settings.Settings` (not imported here: settings
    imports this module), its ``redis_target`` being ``redis_url`` or the default."""

    @property
    def redis_target(self) -> str: ...


Where = Union[str, RedisTarget]


def url_of(where: Where) -> str:
    """The URL ``where`` names: a URL itself, or the settings' ``redis_target``."""
    return where if isinstance(where, str) else where.redis_target


def is_cluster_url(url: Optional[str]) -> bool:
    return bool(url) and url.split("://", 1)[0] in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """``redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]`` (``rediss+cluster://``:
    TLS) -> the seed nodes and the client options; ValueError when malformed (pure)."""
    scheme, sep, rest = url.partition("://")
    if scheme not in CLUSTER_SCHEMES or not sep:
        raise ValueError("expected redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]")
    rest = rest.split("/", 1)[0].split("?", 1)[0]
    creds, _, hosts = rest.rpartition("@")
    nodes = []
    for part in hosts.split(","):
        parts = urlsplit(f"//{part}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or not port:
            raise ValueError(f"cluster node {part!r} is not HOST:PORT")
        nodes.append((parts.hostname, port))
    opts: dict[str, Any] = {"ssl": scheme == "rediss+cluster"}
    if creds:
        user, _, password = creds.partition(":")
        opts.update(username=unquote(user) or None, password=unquote(password) or None)
    return nodes, opts


def connect(where: Where, timeout: float = 5.0) -> redis.Redis:
    """The one way to a Redis: a client for ``where``, the settings (their ``redis_url``, with
    the ACL user, password and CA put in; else the default local server) or an explicit URL
    (``redis://``, ``rediss://`` for TLS, user:password allowed; ``redis+cluster://h1:p1,h2:p2``
    for a Redis Cluster: a :class:`RedisCluster`).

    Nothing is sent until the first command (a cluster asks its seeds for the slot map at
    once); bytes are returned undecoded.
    """
    url = url_of(where)
    if is_cluster_url(url):
        nodes, opts = parse_cluster_url(url)
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes],
                            socket_timeout=timeout + 30.0, socket_connect_timeout=timeout,
                            health_check_interval=15, **opts)
    return redis.Redis.from_url(
        url, socket_timeout=timeout + 30.0, socket_connect_timeout=timeout,
        health_check_interval=15, retry_on_timeout=False,
    )


def is_cluster(r: Any) -> bool:
    return isinstance(r, RedisCluster)


def group_by_node(items: Iterable[K], node_of: Callable[[K], Hashable]) -> list[tuple[Hashable, list[K]]]:
    """``items`` grouped by ``node_of`` (e.g. key -> the node serving its slot), groups in
    order of first appearance, items in their order (pure)."""
    groups: dict[Hashable, list[K]] = {}
    for item in items:
        groups.setdefault(node_of(item), []).append(item)
    return list(groups.items())


def node_clients(r: RedisCluster, keys_: Iterable[K], key_of: Callable[[K], str] = str
                 ) -> list[tuple[redis.Redis, list[K]]]:
    """``keys_`` grouped by the primary serving their slot, with a plain client of that node
    (for what a cluster pipeline cannot carry: scripts, TIME beside a read)."""
    groups = group_by_node(keys_, lambda k: r.get_node_from_key(key_of(k)).name)
    return [(r.get_redis_connection(r.get_node(node_name=name)), items) for name, items in groups]


def slot_parts(r: RedisCluster, streams: dict[str, str]) -> list[tuple[redis.Redis, list[dict[str, str]]]]:
    """``streams`` (stream -> id) split per node, then per hash slot: a multi-key command
    may only name keys of one slot, even on one node."""
    out = []
    for client, names in node_clients(r, streams):
        slots = group_by_node(names, lambda s: r.keyslot(s))
        out.append((client, [{s: streams[s] for s in ss} for _, ss in slots]))
    return out


POLL_S = 0.02  # a blocking read on a cluster: how often the nodes are asked again

SlotRead = Callable[[redis.Redis, list[dict[str, str]]], list]


def read_by_slot(r: RedisCluster, streams: dict[str, str], read: SlotRead, block: Optional[int],
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
                 ) -> list:
    """A multi-stream read on a cluster: ``read(node client, its streams per slot)`` (one
    pipeline: a read per slot) for each node, merged. A server cannot block on streams of
    several slots at once: with ``block`` (ms) the nodes are asked again every
    :data:`POLL_S` until something comes or ``block`` has passed. A moved slot or a lost
    node refreshes the slot map, then raises."""
    deadline = clock() + (block or 0) / 1000
    while True:
        try:
            got = [e for c, parts in slot_parts(r, streams) for e in read(c, parts)]
        except TOPOLOGY_ERRORS as exc:
            refresh_topology(r)  # a failover moved a slot: the next read goes to the new primary
            raise TopologyChanged(f"{exc.__class__.__name__}: {exc}") from exc
        left = deadline - clock()
        if got or left <= 0:
            return got
        sleep(min(POLL_S, left))


def xread_any(r: redis.Redis, streams: dict[str, str], count: int, block: Optional[int],
              group: Optional[str] = None, consumer: str = "") -> list:
    """XREAD over ``streams`` (stream -> last id) on one server or across a cluster's slots
    (with ``group``: XREADGROUP as ``consumer``); the reply as XREAD gives it (a list of
    (stream, entries); an entry deleted while pending has fields None)."""
    def one(client: Any, part: dict[str, str], blk: Optional[int]):
        if group is None:
            return client.xread(part, count=count, block=blk)
        return client.xreadgroup(group, consumer, part, count=count, block=blk)

    if not is_cluster(r):
        return one(r, streams, block) or []

    def read(client: redis.Redis, parts: list[dict[str, str]]) -> list:
        pipe = client.pipeline(transaction=False)
        for part in parts:
            one(pipe, part, None)
        return [item for resp in pipe.execute() for item in (resp or [])]

    return read_by_slot(r, streams, read, block)


def connect_async(where: Where, timeout: float = 5.0):
    """An asyncio client for ``where`` (settings or a URL, as :func:`connect`; a cluster's for
    ``redis+cluster://``)."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode as AsyncNode
    from redis.asyncio.cluster import RedisCluster as AsyncCluster

    url = url_of(where)
    if is_cluster_url(url):
        nodes, opts = parse_cluster_url(url)
        return AsyncCluster(startup_nodes=[AsyncNode(h, p) for h, p in nodes], socket_connect_timeout=timeout,
                            **opts)
    return aioredis.Redis.from_url(url, socket_connect_timeout=timeout)


def refresh_topology(r: Any) -> None:
    """Ask the cluster for its slot map again (after a failover); quiet when it cannot tell yet."""
    if not is_cluster(r):
        return
    try:
        r.nodes_manager.initialize()
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        log.info("cluster slot map not refreshed yet: %s", exc)


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


def lagging(r: redis.Redis, stream: str, group: str, limit: int) -> bool:
    """Backpressure: ``group`` has ``limit`` or more entries of ``stream`` unread or unacked
    (False when nobody consumes the stream: no group, nothing to wait for)."""
    return (group_lag(r, stream, group) or 0) >= limit


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


def groups_lag(r: redis.Redis, stream: str) -> dict[str, int]:
    """Each consumer group of ``stream`` -> its entries not yet delivered plus those pending
    (:func:`group_lag` of every group, one XINFO); empty when the stream has none."""
    try:
        groups = r.xinfo_groups(stream)
    except redis.ResponseError:
        return {}
    out = {}
    for g in groups:
        lag = g.get("lag")
        if lag is None:  # the server cannot tell (e.g. after deletions): count entries
            lag = r.xlen(stream)
        out[text(g.get("name"))] = int(lag) + int(g.get("pending", 0))
    return out


def registered_cameras(r: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in r.hkeys(keys.CAMERAS_KEY))


def registration(r: redis.Redis, camera: str) -> dict:
    """A camera's registration (``keys.CAMERAS_KEY``: source, mode, ``rules``, ``motion``...);
    ``{}`` when it has none, or one that is not a JSON object."""
    raw = r.hget(keys.CAMERAS_KEY, camera)
    try:
        desc = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return desc if isinstance(desc, dict) else {}


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
