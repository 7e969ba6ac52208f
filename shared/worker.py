"""The stream-consumer loop every stage worker runs: lease, read, process, write, ack.

A stage subclass supplies the pure part, :meth:`StageWorker.handle` (entries in, outputs
out), and the loop does the I/O around it with an explicit exception ladder:

* connection lost     -> back off (capped, jittered) and reconnect; nothing is acked
* stop requested      -> (SIGTERM/SIGINT set a flag) finish the batch in hand,
                         release leases, exit 0
* bad message         -> ``handle`` puts it on the dead-letter list with its reason
* unknown error       -> logged; the batch stays pending and is retried, and an entry
                         that failed ``max_attempts`` times goes to the dead-letter stream

Outputs, dead letters and acks of one batch are written in one pipeline, acks last, so
nothing is acked before its output is written (at-least-once).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import redis

from shared import codec, keys
from shared.redisio import (CONNECTION_ERRORS, Leases, add_dead_letter, connect, ensure_group, live_workers,
                            redact, registered_cameras, stream_entries, text)
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Entry:
    stream: str
    camera: str
    id: str
    fields: dict

    def decode(self, decode: Callable[[dict], Any]) -> Any:
        """The entry's message by ``decode`` (a codec function), checked to name the camera
        whose stream it came on; :class:`codec.DecodeError` otherwise."""
        msg = decode(self.fields)
        if msg.camera != self.camera:
            raise codec.DecodeError(f"message names camera {msg.camera!r} on {self.camera!r}'s stream")
        return msg


@dataclass
class Output:
    stream: str
    fields: dict
    maxlen: Optional[int] = None  # approximate trim (MAXLEN ~)


@dataclass
class Outcome:
    """What ``handle`` made of a batch: outputs to write, entries to dead-letter, to ack."""

    outputs: list[Output] = field(default_factory=list)
    dead: list[tuple[Entry, str]] = field(default_factory=list)
    done: list[Entry] = field(default_factory=list)  # processed; acked after outputs land
    finished: dict[str, int] = field(default_factory=dict)  # camera -> frames, at end of stream
    sets: dict[str, str] = field(default_factory=dict)  # small per-camera state (SET key value)


def default_worker_id(stage: str) -> str:
    return f"{stage}-{socket.gethostname()}-{os.getpid()}"


class StageWorker:
    """Base class: one stage (``pose`` or ``action``) over the cameras it holds leases on."""

    stage: str = ""

    def __init__(self, settings: Settings, cameras: Optional[list[str]] = None,
                 worker_id: Optional[str] = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.only = set(cameras) if cameras else None
        self.worker_id = worker_id or default_worker_id(self.stage)
        self.clock = clock
        self.r: Optional[redis.Redis] = None
        self.leases: Optional[Leases] = None
        self.owned: set[str] = set()
        self.backlog: set[str] = set()  # cameras whose own pending entries come first
        self.finished: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.metrics: dict[str, Any] = {"batches": 0, "entries": 0, "dead": 0, "reconnects": 0,
                                        "errors": 0, "state": "starting"}
        self._stop = False
        self._next_leases = 0.0
        self._lost: set[str] = set()  # leases the keeper thread could not renew
        self._keeper: Optional[threading.Thread] = None
        self._keeper_stop = threading.Event()
        self.max_attempts = 3  # failures of a batch (exceptions) before dead-lettering
        self.max_deliveries = 10  # deliveries of one entry (e.g. killed workers) before dead-lettering

    # ---------------------------------------------------------------- hooks

    def handle(self, entries: list[Entry]) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_acquired(self, camera: str) -> None:
        """A camera became ours (after its pending entries were claimed)."""

    def on_released(self, camera: str) -> None:
        """A camera is no longer ours; free its state."""

    def has_room(self, camera: str) -> bool:
        """Whether to read more input for ``camera`` now (replay backpressure)."""
        return True

    def after_write(self, outcome: Outcome) -> None:
        """Called after a batch's outputs and acks were written."""

    # ---------------------------------------------------------------- run

    def request_stop(self, *_: Any) -> None:
        self._stop = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self, burst: bool = False, max_items: Optional[int] = None,
            exit_on_eos: bool = False) -> int:
        """Process until stopped. ``burst``: stop when nothing is left to read;
        ``max_items``: stop after that many entries; ``exit_on_eos``: stop once every
        camera of ``cameras`` has reached its end of stream."""
        self._connect()
        self._start_keeper()
        backoff = 0.2
        try:
            while not self._stop:
                try:
                    got = self.tick()
                    backoff = 0.2
                except CONNECTION_ERRORS as exc:
                    backoff = self._on_disconnect(exc, backoff)
                    continue
                if max_items is not None and self.metrics["entries"] >= max_items:
                    break
                if exit_on_eos and self.only and self.only <= self._done_everywhere():
                    break
                if burst and not got and not self.backlog:
                    break
        finally:
            self._shutdown()
        return 0

    def _on_disconnect(self, exc: BaseException, backoff: float) -> float:
        self.metrics["state"] = "disconnected"
        self.metrics["reconnects"] += 1
        log.warning("%s: redis unreachable (%s); retrying in %.1f s", self.worker_id, exc, backoff)
        self._sleep(backoff * (0.5 + random.random()))
        for cam in sorted(self.owned):  # leases may have expired meanwhile: state is rebuilt
            self._drop(cam)  # from Redis when the camera is taken again
        self._next_leases = 0.0
        return min(backoff * 2, 10.0)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop and time.monotonic() < end:
            time.sleep(min(0.1, seconds))

    def _connect(self) -> None:
        url = self.settings.redis_url or "redis://127.0.0.1:6379/0"
        self.r = connect(url)
        self.leases = Leases(self.r, self.stage, self.worker_id, self.settings.lease_ttl_s)
        log.info("%s: using redis at %s", self.worker_id, redact(url))

    def tick(self) -> int:
        """One round: refresh leases, read a batch, handle it, write. Returns entries read."""
        now = time.monotonic()
        for cam in sorted(self._lost & self.owned):
            log.warning("%s: lost the lease on camera %s", self.worker_id, cam)
            self._drop(cam)
        self._lost.clear()
        if now >= self._next_leases:
            self.refresh_leases()
            self._next_leases = now + self.settings.lease_ttl_s / 3
        entries = self.read()
        if entries:
            self.process(entries)
        return len(entries)

    # ---------------------------------------------------------------- leases

    def wanted_cameras(self) -> list[str]:
        cams = registered_cameras(self.r)
        return [c for c in cams if self.only is None or c in self.only]

    def _start_keeper(self) -> None:
        """A thread that renews leases and beats the heart while a long batch runs."""
        self._keeper_stop.clear()
        self._keeper = threading.Thread(target=self._keep, name=f"{self.worker_id}-leases", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        period = min(2.0, self.settings.lease_ttl_s / 3)
        while not self._keeper_stop.wait(period):
            try:
                for cam in self.owned.copy():  # a copy: the main thread changes the set
                    if not self.leases.renew(cam):
                        self._lost.add(cam)
                self.heartbeat()
            except CONNECTION_ERRORS:
                pass  # the main loop sees the outage and reconnects
            except Exception:  # never let the keeper die silently
                log.exception("%s: lease keeper failed", self.worker_id)

    def refresh_leases(self) -> None:
        """Give back what exceeds a fair share, take free cameras (renewal: the keeper)."""
        self.heartbeat()
        wanted = self.wanted_cameras()
        share = self.fair_share(len(wanted))
        for cam in sorted(self.owned)[share:]:
            log.info("%s: gives camera %s back (fair share is %d)", self.worker_id, cam, share)
            self.leases.release(cam)
            self._drop(cam)
        for cam in wanted:
            if cam in self.owned or len(self.owned) >= share:
                continue
            if self.leases.try_acquire(cam):
                self._take(cam)
        self.metrics["state"] = "running"

    def fair_share(self, cameras: int) -> int:
        """How many cameras this worker should hold: an even split over live workers."""
        workers = max(1, live_workers(self.r, self.stage))
        return min(self.settings.max_cameras, -(-cameras // workers))

    def _take(self, camera: str) -> None:
        stream = keys.stage_stream(self.stage, camera)
        ensure_group(self.r, stream, self.stage)
        claimed = self._claim_pending(stream)
        self.owned.add(camera)
        self.backlog.add(camera)
        log.info("%s: took camera %s (%d pending entries claimed)", self.worker_id, camera, claimed)
        self.on_acquired(camera)

    def _claim_pending(self, stream: str) -> int:
        """Move every pending entry of the stage's group on ``stream`` to this consumer.

        JUSTID leaves the delivery counters alone: only real deliveries count towards
        ``max_deliveries``.
        """
        start, total, page = "0-0", 0, 1000
        while True:
            ids = self.r.xautoclaim(stream, self.stage, self.worker_id, min_idle_time=0,
                                    start_id=start, count=page, justid=True)
            total += len(ids)
            if len(ids) < page:
                return total
            ms, _, seq = text(ids[-1]).partition("-")
            start = f"{ms}-{int(seq) + 1}"

    def _drop(self, camera: str) -> None:
        self.owned.discard(camera)
        self.backlog.discard(camera)
        self.on_released(camera)

    # ---------------------------------------------------------------- read / write

    def read(self) -> list[Entry]:
        backlog = {keys.stage_stream(self.stage, c): "0" for c in sorted(self.backlog & self.owned)}
        if backlog:
            got = self._xread(backlog, block=None)
            seen = {e.camera for e in got}
            self.backlog -= {c for c in self.backlog if c not in seen}
            got = self._screen_redelivered(got)
            if got:
                return got
        fresh = {keys.stage_stream(self.stage, c): ">" for c in sorted(self.owned)
                 if c not in self.finished and self.has_room(c)}
        if not fresh:
            self._sleep(self.settings.block_ms / 1000)
            return []
        return self._xread(fresh, block=self.settings.block_ms)

    def _xread(self, streams: dict[str, str], block: Optional[int]) -> list[Entry]:
        count = min(self.settings.batch_per_camera, max(1, self.settings.max_batch // len(streams)))
        resp = self.r.xreadgroup(self.stage, self.worker_id, streams, count=count, block=block)
        return [Entry(s, keys.camera_of_stream(s), i, f) for s, i, f in stream_entries(resp)]

    def _screen_redelivered(self, entries: list[Entry]) -> list[Entry]:
        """Dead-letter entries delivered too often (they keep killing workers); keep the rest."""
        if not entries:
            return entries
        counts: dict[str, int] = {}
        by_stream: dict[str, list[Entry]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e)
        for stream, es in by_stream.items():
            for p in self.r.xpending_range(stream, self.stage, min=es[0].id, max=es[-1].id,
                                           count=len(es)):
                counts[text(p["message_id"])] = int(p["times_delivered"])
        poison = [e for e in entries if counts.get(e.id, 0) > self.max_deliveries]
        if poison:
            self.write(Outcome(dead=[(e, f"delivered {counts[e.id]} times without being acked "
                                         "(it may crash workers)") for e in poison]))
        return [e for e in entries if counts.get(e.id, 0) <= self.max_deliveries]

    def process(self, entries: list[Entry]) -> None:
        try:
            outcome = self.handle(entries)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:  # unknown: retry, then dead-letter the repeat offenders
            self.metrics["errors"] += 1
            log.exception("%s: batch of %d failed: %s", self.worker_id, len(entries), exc)
            outcome = self._poison(entries, exc)
            self.backlog |= {e.camera for e in entries}
        self.write(outcome)
        self.metrics["batches"] += 1
        self.metrics["entries"] += len(outcome.done) + len(outcome.dead)
        self.after_write(outcome)

    def _poison(self, entries: list[Entry], exc: Exception) -> Outcome:
        out = Outcome()
        for e in entries:
            n = self.attempts.get(e.id, 0) + 1
            self.attempts[e.id] = n
            if n >= self.max_attempts:
                out.dead.append((e, f"failed {n} times: {exc.__class__.__name__}: {exc}"))
                self.attempts.pop(e.id, None)
        return out

    def write(self, outcome: Outcome) -> None:
        pipe = self.r.pipeline(transaction=False)
        for o in outcome.outputs:
            pipe.xadd(o.stream, o.fields, maxlen=o.maxlen, approximate=True)
        for entry, reason in outcome.dead:
            log.warning("%s: camera %s entry %s dead-lettered: %s", self.worker_id, entry.camera,
                        entry.id, reason)
            add_dead_letter(pipe, self.stage, entry.stream, entry.id, entry.fields, reason,
                            self.settings.deadletter_maxlen)
        for camera, frames in outcome.finished.items():
            pipe.hset(keys.done_key(self.stage), camera, frames)
        for key, value in outcome.sets.items():
            pipe.set(key, value)
        acks: dict[str, list[str]] = {}
        for entry in [*outcome.done, *(e for e, _ in outcome.dead)]:
            acks.setdefault(entry.stream, []).append(entry.id)
        for stream, ids in acks.items():
            pipe.xack(stream, self.stage, *ids)
        pipe.execute()
        self.metrics["dead"] += len(outcome.dead)
        self.finished |= set(outcome.finished)
        for camera in outcome.finished:
            log.info("%s: camera %s reached its end of stream", self.worker_id, camera)

    def _done_everywhere(self) -> set[str]:
        return {text(c) for c in self.r.hkeys(keys.done_key(self.stage))}

    # ---------------------------------------------------------------- heartbeat / stop

    def heartbeat(self) -> None:
        beat = dict(self.metrics, worker=self.worker_id, stage=self.stage,
                    cameras=sorted(self.owned.copy()), at=self.clock())
        self.r.set(keys.worker_key(self.worker_id), json.dumps(beat),
                   ex=max(5, int(self.settings.lease_ttl_s * 3)))

    def _shutdown(self) -> None:
        self._keeper_stop.set()
        if self._keeper is not None:
            self._keeper.join(5)
        self.metrics["state"] = "stopped"
        try:
            for cam in sorted(self.owned):
                self.leases.release(cam)
                self.on_released(cam)
            self.r.delete(keys.worker_key(self.worker_id))
        except CONNECTION_ERRORS as exc:
            log.warning("%s: could not release leases (%s); they expire by TTL", self.worker_id, exc)
        self.owned.clear()
        log.info("%s: stopped after %d entries in %d batches (%d dead-lettered)", self.worker_id,
                 self.metrics["entries"], self.metrics["batches"], self.metrics["dead"])
