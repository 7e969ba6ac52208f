"""Reading a batch: one XREADGROUP over many streams, with the server's time.

Each :class:`Entry` carries its age, measured on the Redis server's clock alone: the
server time right after the read (TIME, in the same pipeline) minus the milliseconds of
the entry id (the server's time when the entry was added). No two hosts' clocks meet.

On a Redis Cluster the streams of different cameras sit on different nodes: one
pipeline per node: an XREADGROUP per hash slot, then TIME (from the node that served the
reads), merged (:func:`shared.redisio.read_by_slot`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import redis

from shared import codec, keys
from shared.redisio import is_cluster, read_by_slot, stream_entries


@dataclass
class Entry:
    stream: str
    camera: str
    id: str
    fields: dict
    age_s: Optional[float] = None  # server time at the read minus the id's time
    msg: Any = None  # the message once decoded

    def decode(self, decode: Callable[[dict], Any]) -> Any:
        """The entry's message by ``decode`` (a codec function), checked to name the camera
        whose stream it came on; :class:`codec.DecodeError` otherwise."""
        msg = decode(self.fields)
        if msg.camera != self.camera:
            raise codec.DecodeError(f"message names camera {msg.camera!r} on {self.camera!r}'s stream")
        self.msg = msg
        return msg


def id_ms(entry_id: str) -> int:
    """The server time (ms) inside a stream entry id."""
    return int(entry_id.partition("-")[0])


def server_ms(time_reply) -> int:
    """A TIME reply (seconds, microseconds) in milliseconds."""
    secs, micros = time_reply
    return int(secs) * 1000 + int(micros) // 1000


def read_group(r: redis.Redis, group: str, consumer: str, streams: dict[str, str], count: int,
               block: Optional[int]) -> list[Entry]:
    """XREADGROUP ``streams`` (stream -> id, ``>`` for new entries) and stamp ages."""
    if not is_cluster(r):
        return _read_parts(r, group, consumer, [streams], count, block)
    return read_by_slot(r, streams, lambda c, parts: _read_parts(c, group, consumer, parts, count, None),
                        block)


def _read_parts(r: redis.Redis, group: str, consumer: str, parts: list[dict[str, str]], count: int,
                block: Optional[int]) -> list[Entry]:
    """One pipeline on one server: an XREADGROUP per part, then TIME (the ages' clock)."""
    pipe = r.pipeline(transaction=False)
    for part in parts:
        pipe.xreadgroup(group, consumer, part, count=count, block=block)
    pipe.time()
    *resps, now = pipe.execute()
    now_ms = server_ms(now)
    return [Entry(s, keys.camera_of_stream(s), i, f, max(0.0, (now_ms - id_ms(i)) / 1000))
            for resp in resps for s, i, f in stream_entries(resp)]


def batch_count(per_stream: int, max_batch: int, streams: int) -> int:
    """Entries per stream in one read so that a batch stays within ``max_batch``."""
    return min(per_stream, max(1, max_batch // max(1, streams)))


def split_by_stream(entries: list[Entry]) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for e in entries:
        out.setdefault(e.stream, []).append(e)
    return out
