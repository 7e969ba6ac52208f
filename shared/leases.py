"""Leases with fencing tokens: one owner per camera per stage (ARCHITECTURE.md, invariant 2).

A lease is a key set with a TTL whose value is ``<worker id>|<token>``; the token comes
from a per-camera counter INCR'd at each acquisition, so two holders in time never share
a value. Every write of a camera's outputs and acks checks that value in the same script
(:mod:`shared.writing`): a worker whose lease expired — a long GC pause, a stalled call —
can no longer write or ack, even before it notices. A worker re-adopts its own lease
that is still valid (after a Redis blip it is not blocked by itself), with a new token.
"""

from __future__ import annotations

import logging
from typing import Optional

import redis

from shared import keys

log = logging.getLogger(__name__)

# KEYS[1] lease, KEYS[2] fence counter; ARGV[1] worker id, ARGV[2] ttl ms.
# Returns the new lease value, or false when another worker holds the lease.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local mine = ARGV[1] .. '|'
  if string.sub(cur, 1, #mine) ~= mine or not string.match(string.sub(cur, #mine + 1), '^%d+$') then
    return false
  end
end
local value = ARGV[1] .. '|' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""
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


def holder_of(value: Optional[str]) -> Optional[str]:
    """The worker id inside a lease value (``worker|token``)."""
    if value is None:
        return None
    worker, sep, token = value.rpartition("|")
    return worker if sep and token.isdigit() else value


class Leases:
    """This worker's leases on cameras for one stage, with their fencing values."""

    def __init__(self, r: redis.Redis, stage: str, worker_id: str, ttl_s: float) -> None:
        self.r = r
        self.stage = stage
        self.worker_id = worker_id
        self.ttl_ms = int(ttl_s * 1000)
        self.values: dict[str, str] = {}  # camera -> lease value (worker|token) we hold
        self._acquire = r.register_script(_ACQUIRE)
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)

    def key(self, camera: str) -> str:
        return keys.lease_key(self.stage, camera)

    def try_acquire(self, camera: str) -> bool:
        """Take the camera if it is free (or still ours); a new fencing token either way."""
        value = self._acquire(keys=[self.key(camera), keys.fence_key(self.stage, camera)],
                              args=[self.worker_id, self.ttl_ms])
        if value is None:
            self.values.pop(camera, None)
            return False
        self.values[camera] = value.decode() if isinstance(value, bytes) else str(value)
        return True

    def value(self, camera: str) -> str:
        """The lease value a fenced write must find (empty: we hold no lease)."""
        return self.values.get(camera, "")

    def renew(self, camera: str) -> bool:
        value = self.values.get(camera)
        if value is None:
            return False
        ok = bool(self._renew(keys=[self.key(camera)], args=[value, self.ttl_ms]))
        if not ok:
            self.values.pop(camera, None)
        return ok

    def release(self, camera: str) -> None:
        value = self.values.pop(camera, None)
        if value is not None:
            self._release(keys=[self.key(camera)], args=[value])

    def forget(self, camera: str) -> None:
        """Stop using the camera's lease without touching Redis (it was lost)."""
        self.values.pop(camera, None)

    def holder(self, camera: str) -> Optional[str]:
        raw = self.r.get(self.key(camera))
        return holder_of(raw.decode() if raw is not None else None)
