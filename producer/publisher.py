"""The one frame publisher: what the live producer (:mod:`producer.producer`) and the replay
jobs (:mod:`workers.jobs.runner`) publish goes through :data:`PUBLISH`, one script that XADDs
the item and records where its publisher stands, so that a write retried after its reply was
lost (a dropped connection, a failover) or a copy that takes over adds nothing twice
(ARCHITECTURE.md, invariant 2). Around it :class:`Publisher` holds the rest both need:
the lag of the stream's consumer groups (backpressure, ``replay`` mode: invariant 3) and the
durability confirmation (``durable_frames``: invariant 8).

The two publishers differ only in what they pass (each a parameter of the script):

============  ======================================  ==========================================
              producer (``keys.producer_key``)        replay job (``keys.job_checkpoint_key``)
============  ======================================  ==========================================
fencing       none (one producer per camera)          the job's lease (KEYS[3], ARGV[1])
``seq`` mark  the next seq to publish (seq + 1)       the last seq published (seq)
item refused  its mark is not past the hash's ``seq`` (the same rule for both)
end of stream ``eos:EPOCH:SEQ``: a new epoch's end    ``1``: one end per job; the ``seq`` mark
              is published again; sets ``seq``        is left as it is
count         none                                    ``published`` + 1 per item
trimming      ``MAXLEN ~ live_maxlen`` in live mode   none (replay drops nothing)
backpressure  every group of the stream (replay)      the group of the stage it feeds
durability    ``durable_frames``                      none (as before the two were one)
============  ======================================  ==========================================
"""

from __future__ import annotations

from typing import Mapping, Optional

import redis

from shared.durability import Durability
from shared.redisio import group_lag, groups_lag

# Publish one item and advance the publisher's hash, atomically: checked first, then the XADD,
# then the hash (a failing XADD leaves the hash as it was, so the item is tried again).
# KEYS[1] the stream; KEYS[2] the publisher's hash: 'seq' (its mark), 'eos' (the last end of
# stream's tag), a count; KEYS[3] (optional) the lease fencing the publisher.
# ARGV[1] the lease's value ('' without KEYS[3]); ARGV[2] the 'seq' mark this write sets ('':
# left as is; an item needs one); ARGV[3] '' for an item, else the end of stream's tag; ARGV[4]
# the MAXLEN ('' for none); ARGV[5] the field an item counts in ('' for none); ARGV[6..] field,
# value, ...  Returns 1 published, -1 already published (an item whose mark is not past the
# hash's, an end of stream whose tag is the hash's), 0 the lease is not ours.
PUBLISH = """
if KEYS[3] and redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' then
  if redis.call('HGET', KEYS[2], 'eos') == ARGV[3] then return -1 end
else
  local mark = redis.call('HGET', KEYS[2], 'seq')
  if mark and tonumber(mark) >= tonumber(ARGV[2]) then return -1 end
end
local args = {KEYS[1]}
if ARGV[4] ~= '' then args = {KEYS[1], 'MAXLEN', '~', ARGV[4]} end
args[#args + 1] = '*'
for i = 6, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('XADD', unpack(args))
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], 'eos', ARGV[3])
elseif ARGV[5] ~= '' then
  redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], 'seq', ARGV[2]) end
return 1
"""

PUBLISHED, ALREADY, NOT_OURS = 1, -1, 0  # what :meth:`Publisher.put` returns


class Publisher:
    """Publishes into ``stream``, recording where it stands in the hash ``state_key``
    (``seq``, ``eos``, ``count_field``); fenced by ``lease_key`` when given. All keys must
    share a hash slot (they carry the camera's tag)."""

    def __init__(self, r: redis.Redis, stream: str, state_key: str, lease_key: Optional[str] = None,
                 count_field: str = "", durability: Optional[Durability] = None) -> None:
        self.r, self.stream, self.state_key = r, stream, state_key
        self.lease_key, self.count_field = lease_key, count_field
        self.durability = durability or Durability()
        self._script = r.register_script(PUBLISH)

    def put(self, fields: Mapping, mark: Optional[int], eos: str = "", maxlen: Optional[int] = None,
            lease: str = "") -> int:
        """XADD ``fields`` (trimmed to ``maxlen``, ``~``) and set the hash's ``seq`` to ``mark``
        (``None``: left as is), unless already published: :data:`PUBLISHED`, :data:`ALREADY`,
        or :data:`NOT_OURS` when ``lease`` is not the lease's value. ``eos``: the end of
        stream's tag ('' for an item, which needs a ``mark``)."""
        if not eos and mark is None:
            raise ValueError("an item needs its seq mark")
        keys = [self.stream, self.state_key] + ([self.lease_key] if self.lease_key else [])
        args = [lease, "" if mark is None else mark, eos, "" if maxlen is None else maxlen, self.count_field]
        for k, v in fields.items():
            args += [k, v]
        return int(self._script(keys=keys, args=args))

    def confirm(self, mark: int) -> Optional[str]:
        """None once the writes are durable as configured (nothing to do without durability)
        and the hash's ``seq`` has reached ``mark`` on the stream's node; else why not
        (:meth:`shared.durability.Durability.confirm`)."""
        return self.durability.confirm(self.r, self.stream, what="frames",
                                       must_reach=(self.state_key, "seq", mark))

    def behind(self, limit: int, group: Optional[str] = None) -> dict[str, int]:
        """Backpressure: the consumer groups of the stream (only ``group`` when given) with
        ``limit`` or more entries unread or unacked -> that number; empty when none is (or
        nobody consumes the stream)."""
        if group is None:
            lags = groups_lag(self.r, self.stream)
        else:
            lag = group_lag(self.r, self.stream, group)
            lags = {} if lag is None else {group: lag}
        return {g: n for g, n in lags.items() if n >= limit}
