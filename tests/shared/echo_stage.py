"""A small concrete stage for the consumer-loop tests: it echoes each entry of a camera's
input stream to ``actionstream:echo:{cam}`` and keeps the last echoed id as its state.

Entries with a ``fail`` field raise in ``handle``: ``always`` every time (poison), a number
``n``: the first ``n`` times. A ``hold`` event makes ``handle`` wait (a stalled call, a GC
pause). ``crash()`` stops the worker the way kill -9 does: no release, no more renewals.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

import redis

from shared import keys
from shared.settings import Settings, load_settings
from shared.worker import Entry, Outcome, Output, StageWorker


class Crash(BaseException):
    """Ends a worker's thread without its shutdown (like kill -9)."""


def echo_stream(camera: str) -> str:
    return f"{keys.PREFIX}:echo:{{{camera}}}"


def state_key(camera: str) -> str:
    return f"{keys.PREFIX}:echo-state:{{{camera}}}"


def settings(url: str, **kw) -> Settings:
    kw.setdefault("lease_ttl_s", 0.6)
    kw.setdefault("block_ms", 20)
    kw.setdefault("mode", "replay")
    return load_settings(redis_url=url, **kw)


class EchoWorker(StageWorker):
    stage = keys.POSE_GROUP  # reads the frames streams (raw fields, never decoded)

    def __init__(self, settings: Settings, worker_id: str, cameras: Optional[list[str]] = None) -> None:
        super().__init__(settings, cameras, worker_id)
        self.calls: dict[str, int] = {}  # "camera/id" -> handle calls that saw it (ids repeat
        # across streams)
        self.hold: Optional[threading.Event] = None
        self.holding = threading.Event()
        self.ages: dict[str, float] = {}
        self.crashed = False

    def handle(self, entries: list[Entry]) -> Outcome:
        if self.hold is not None:
            self.holding.set()
            self.hold.wait(30)
        out = Outcome()
        for e in entries:
            key = f"{e.camera}/{e.id}"
            self.calls[key] = self.calls.get(key, 0) + 1
            fail = e.fields.get(b"fail")
            if fail == b"always" or (fail is not None and self.calls[key] <= int(fail)):
                raise ValueError(f"entry {e.id} is poison")
            self.ages[key] = e.age_s
            out.outputs.append(Output(echo_stream(e.camera), {"src": e.id, "n": e.fields.get(b"n", b"")}))
            out.sets[state_key(e.camera)] = e.id
            out.done.append(e)
        return out

    def tick(self) -> int:
        if self.crashed:
            raise Crash()
        return super().tick()

    def crash(self) -> None:
        self.keeper.stop(wait_s=0)  # no more renewals or heartbeats
        self.crashed = True

    def _shutdown(self) -> None:
        if self.crashed:
            self.keeper.stop(wait_s=0)
            return
        super()._shutdown()


class Running:
    """Workers run in threads until stopped (or crashed)."""

    def __init__(self, *workers: EchoWorker) -> None:
        self.workers = list(workers)
        self.threads: list[threading.Thread] = []
        for w in self.workers:
            self.start(w)

    def start(self, w: EchoWorker) -> None:
        t = threading.Thread(target=self._run, args=(w,), daemon=True)
        self.threads.append(t)
        t.start()

    @staticmethod
    def _run(w: EchoWorker) -> None:
        try:
            w.run()
        except Crash:
            pass

    def stop(self) -> None:
        for w in self.workers:
            w.request_stop()
            if w.hold is not None:
                w.hold.set()
        for t in self.threads:
            t.join(30)


def register(r: redis.Redis, cameras: list[str]) -> None:
    for cam in cameras:
        r.hset(keys.CAMERAS_KEY, cam, "{}")


def publish(r: redis.Redis, camera: str, n: int, start: int = 0, **extra: dict) -> list[str]:
    """``n`` entries ``{"n": i}`` on the camera's frames stream; ``extra``: i -> more fields."""
    ids = []
    for i in range(start, start + n):
        fields = {"n": i, **extra.get(str(i), {})}
        ids.append(r.xadd(keys.frames_stream(camera), fields).decode())
    return ids


def wait_for(cond, timeout: float = 30.0, what: str = "condition"):
    """Poll ``cond`` until it is true (a hang guard, not a speed measurement)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def echoed(r: redis.Redis, camera: str) -> list[str]:
    """Source ids echoed for ``camera``, in order."""
    return [f[b"src"].decode() for _, f in r.xrange(echo_stream(camera))]


def pending(r: redis.Redis, camera: str) -> int:
    try:
        return r.xpending(keys.frames_stream(camera), keys.POSE_GROUP)["pending"]
    except redis.ResponseError:
        return 0


def owners(r: redis.Redis, cameras: list[str]) -> dict[str, Optional[str]]:
    from shared.leases import holder_of

    out = {}
    for cam in cameras:
        raw = r.get(keys.lease_key(keys.POSE_GROUP, cam))
        out[cam] = holder_of(raw.decode()) if raw else None
    return out
