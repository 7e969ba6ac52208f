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
import threading
from typing import Callable, Iterable, Optional

import redis

from shared import keys
from shared.redisio import CONNECTION_ERRORS

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


def renew_period_s(ttl_s: float) -> float:
    """How often a worker renews its leases (and reconsiders them): a quarter of the TTL, at
    most 2 s, so that a lease survives several missed rounds."""
    return min(2.0, ttl_s / 4)


class LeaseKeeper:
    """A thread that renews the leases a worker holds, every ``period_s``, and then calls
    ``beat`` (the heartbeat), so that neither lapses while a long batch runs.

    It only renews: taking and giving back cameras is the main loop's job. A lease that can
    no longer be renewed (it expired and another worker took it) is reported by
    :meth:`take_lost`, and the main loop drops its camera; until then the fenced writes
    already refuse everything of it. ``leases`` is set (again) on each connect, ``held``
    says which cameras the worker holds now.
    """

    def __init__(self, held: Callable[[], Iterable[str]], period_s: float,
                 beat: Callable[[], None] = lambda: None, name: str = "leases") -> None:
        self.held = held
        self.period_s = period_s
        self.beat = beat
        self.name = name
        self.leases: Optional[Leases] = None
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, wait_s: float = 5.0) -> None:
        """No more renewals or beats; waits up to ``wait_s`` for the thread to end."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread() and wait_s > 0:
            self._thread.join(wait_s)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.renew_once()
            except CONNECTION_ERRORS:
                pass  # the main loop sees the outage and reconnects
            except Exception:  # never let the keeper die silently
                log.exception("%s: lease keeper failed", self.name)

    def renew_once(self) -> None:
        """One round: renew every lease held, then beat the heart."""
        for cam in list(self.held()):
            if self.leases is not None and not self.leases.renew(cam):
                with self._lock:
                    self._lost.add(cam)
        self.beat()

    def take_lost(self) -> set[str]:
        """The cameras whose lease could not be renewed since the last call."""
        with self._lock:
            lost, self._lost = self._lost, set()
        return lost
