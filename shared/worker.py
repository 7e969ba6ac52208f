"""The stream-consumer loop every stage worker runs: lease, read, process, write, ack.

A stage subclass supplies the pure part, :meth:`StageWorker.handle` (entries in, outputs
out), and the loop does the I/O around it; each job lives in a small module of its own:
leases with fencing tokens and the thread that renews them (:mod:`shared.leases`),
claiming pending entries (:mod:`shared.claiming`), reading with server-side ages
(:mod:`shared.reading`), fenced and checked writes (:mod:`shared.writing`), heartbeats
(:mod:`shared.heartbeat`).

The exception ladder:

* connection lost     -> back off (capped, jittered) and reconnect; nothing is acked;
                         our own still-valid leases are re-adopted
* stop requested      -> (SIGTERM/SIGINT set a flag) finish the batch in hand,
                         release leases, exit 0
* bad message         -> ``handle`` puts it on the dead-letter list with its reason
* ``handle`` raises   -> the batch is bisected down to single entries; the camera of a
                         failing entry waits (its entries stay pending, in order) and the
                         entry is retried; after ``max_attempts`` failures it alone is
                         dead-lettered
* a write fails       -> (ResponseError, OOM) logged; nothing of that camera is acked and
                         the batch is retried; any other refused command: logged, backoff
* lease lost          -> the fenced write refuses (nothing written, nothing acked); the
                         camera is dropped and its new owner reclaims the entries
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Any, Callable, Optional

import redis

from shared import claiming, heartbeat, keys, metrics, writing
from shared.backoff import backoff_delay
from shared.leases import LeaseKeeper, Leases, renew_period_s
from shared.reading import Entry, batch_count, read_group, split_by_stream
from shared.redisio import (CONNECTION_ERRORS, connect, ensure_group, group_lag, redact, registered_cameras,
                            text)
from shared.settings import Settings
from shared.writing import Outcome, Output

__all__ = ["Entry", "Outcome", "Output", "StageWorker", "default_worker_id"]

log = logging.getLogger(__name__)


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
        self.attempts: dict[tuple[str, str], int] = {}  # (stream, id) -> failures of handle
        self.metrics: dict[str, Any] = {"batches": 0, "entries": 0, "dead": 0, "reconnects": 0,
                                        "errors": 0, "fenced": 0, "takeovers": 0, "state": "starting"}
        self._stop = False
        self._next_leases = 0.0
        self.keeper = LeaseKeeper(lambda: self.owned.copy(), renew_period_s(settings.lease_ttl_s),
                                  beat=self.heartbeat, name=f"{self.worker_id}-leases")  # renews in a thread
        self._script = None
        self._report_behind = writing.BehindReport(self.worker_id)  # streams kept over their bound
        self._batch: list[Entry] = []
        self._committed = Outcome()
        self.max_attempts = 3  # failures of one entry (exceptions) before dead-lettering
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
        """Called after a batch's outputs and acks were written (only what was written)."""

    def entry_age_s(self, msg: Any) -> Optional[float]:
        """How long the entry of ``msg`` (decoded in the batch in hand) waited in its stream,
        on the Redis server's clock; None when unknown."""
        for e in self._batch:
            if e.msg is msg:
                return e.age_s
        return None

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
        self.keeper.start()
        attempt = 0  # failed rounds in a row: the backoff's exponent
        try:
            while not self._stop:
                try:
                    got = self.tick()
                    attempt = 0
                    if self._finished(got, burst, max_items, exit_on_eos):  # reads Redis too
                        break
                except CONNECTION_ERRORS as exc:
                    attempt = self._on_disconnect(exc, attempt)
                except redis.ResponseError as exc:  # e.g. OOM: nothing acked, retried
                    attempt = self._on_server_error(exc, attempt)
        finally:
            self._shutdown()
        return 0

    def _finished(self, got: bool, burst: bool, max_items: Optional[int], exit_on_eos: bool) -> bool:
        """Whether :meth:`run` stops after this round (see its doc)."""
        if max_items is not None and self.metrics["entries"] >= max_items:
            return True
        if exit_on_eos and self.only and self.only <= self._done_everywhere():
            return True
        return burst and not got and not self.backlog

    def _on_disconnect(self, exc: BaseException, attempt: int) -> int:
        """Sleep the backoff of retry ``attempt`` and drop every camera; the next attempt."""
        self.metrics["state"] = "disconnected"
        self.metrics["reconnects"] += 1
        metrics.RECONNECTS.labels(self.stage, "redis").inc()
        delay = backoff_delay(attempt, 0.2, 10.0)
        log.warning("%s: redis unreachable (%s); retrying in %.1f s", self.worker_id, exc, delay)
        self._sleep(delay)
        for cam in sorted(self.owned):  # state is rebuilt from Redis when the camera is taken
            self._drop(cam)  # again; our leases, if still valid, are re-adopted then
        self._next_leases = 0.0
        return attempt + 1

    def _on_server_error(self, exc: Exception, attempt: int) -> int:
        """Sleep the backoff of retry ``attempt``; what was read is read again; the next attempt."""
        self.metrics["errors"] += 1
        delay = backoff_delay(attempt, 0.2, 10.0)
        log.error("%s: redis refused a command (%s); retrying in %.1f s", self.worker_id, exc, delay)
        self._sleep(delay)
        self.backlog |= self.owned  # what was read and not acked is read again
        return attempt + 1

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop and time.monotonic() < end:
            time.sleep(min(0.05, seconds))

    def _connect(self) -> None:
        for cam in sorted(self.owned):  # new lease bookkeeping: taken again (or re-adopted)
            self._drop(cam)
        url = self.settings.redis_target
        self.r = connect(url)
        self.leases = Leases(self.r, self.stage, self.worker_id, self.settings.lease_ttl_s)
        self.keeper.leases = self.leases  # the keeper renews through this connection
        self._script = self.r.register_script(writing.FENCED_WRITE)
        log.info("%s: using redis at %s", self.worker_id, redact(url))

    def tick(self) -> int:
        """One round: refresh leases, read a batch, handle it, write. Returns entries read."""
        now = time.monotonic()
        for cam in sorted(self.keeper.take_lost() & self.owned):
            log.warning("%s: lost the lease on camera %s", self.worker_id, cam)
            metrics.LEASE_CHANGES.labels(self.stage, "lost").inc()
            self._drop(cam)
        if now >= self._next_leases:
            self.refresh_leases()
            self._next_leases = now + self.keeper.period_s  # reconsidered as often as renewed
        entries = self.read()
        if entries:
            self.process(entries)
        return len(entries)

    # ---------------------------------------------------------------- leases

    def wanted_cameras(self) -> list[str]:
        cams = registered_cameras(self.r)
        return [c for c in cams if self.only is None or c in self.only]

    def refresh_leases(self) -> None:
        """Give back what exceeds a fair share, take free cameras (renewal: ``self.keeper``)."""
        self.heartbeat()
        self.finished &= self._done_everywhere()  # a restarted producer clears its end mark
        wanted = self.wanted_cameras()
        for cam in sorted(self.owned - set(wanted)):  # unregistered (a finished replay): not ours to keep
            log.info("%s: camera %s is no longer registered; released", self.worker_id, cam)
            self.leases.release(cam)
            metrics.LEASE_CHANGES.labels(self.stage, "released").inc()
            self._drop(cam)
        share = heartbeat.fair_share(len(wanted), heartbeat.live_workers(self.r, self.stage),
                                     self.settings.max_cameras)  # an even split over the live workers
        for cam in sorted(self.owned)[share:]:
            log.info("%s: gives camera %s back (fair share is %d)", self.worker_id, cam, share)
            self.leases.release(cam)
            metrics.LEASE_CHANGES.labels(self.stage, "released").inc()
            self._drop(cam)
        for cam in wanted:
            if cam in self.owned or len(self.owned) >= share:
                continue
            if self.leases.try_acquire(cam):
                self._take(cam)
        self.metrics["state"] = "running"
        self._measure_lags()

    def _measure_lags(self) -> None:
        """The input lag of each camera held, for the metrics (one XINFO GROUPS each)."""
        for cam in sorted(self.owned):
            lag = group_lag(self.r, keys.stage_stream(self.stage, cam), self.stage)
            if lag is not None:
                metrics.STREAM_LAG.labels(self.stage, cam).set(lag)

    def _take(self, camera: str) -> None:
        stream = keys.stage_stream(self.stage, camera)
        ensure_group(self.r, stream, self.stage)
        claimed = claiming.claim(self.r, stream, self.stage, self.worker_id)
        self.owned.add(camera)
        self.backlog.add(camera)
        self.metrics["takeovers"] += 1
        metrics.LEASE_CHANGES.labels(self.stage, "taken").inc()
        metrics.LEASES_HELD.labels(self.stage).set(len(self.owned))
        log.info("%s: took camera %s (%d pending entries claimed)", self.worker_id, camera, claimed)
        self.on_acquired(camera)

    def _drop(self, camera: str) -> None:
        if camera not in self.owned:
            return
        self.owned.discard(camera)
        self.backlog.discard(camera)
        stream = keys.stage_stream(self.stage, camera)
        self.attempts = {k: n for k, n in self.attempts.items() if k[0] != stream}
        metrics.forget_camera(self.stage, camera)
        metrics.LEASES_HELD.labels(self.stage).set(len(self.owned))
        self.on_released(camera)

    # ---------------------------------------------------------------- read

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
        replay = {s: i for s, i in fresh.items() if keys.is_replay(keys.camera_of_stream(s))}
        if not replay:
            return self._xread(fresh, block=self.settings.block_ms)
        return self._read_live_first({s: i for s, i in fresh.items() if s not in replay}, replay) \
            or self._xread(fresh, block=self.settings.block_ms)  # nothing anywhere: wait for either

    def _read_live_first(self, live: dict[str, str], replay: dict[str, str]) -> list[Entry]:
        """Live precedence (ARCHITECTURE.md, the flow), without blocking: the live cameras' new
        entries first; replay cameras only when no live entry is waiting, one entry per
        replay stream while this worker serves live cameras (a live frame arriving meanwhile
        waits for at most that much replay work), whole batches when it serves none. So a
        replay at full speed takes the time the live cameras leave, and their lag does not
        grow by more than one frame's work."""
        got = self._xread(live, block=None) if live else []
        if got:
            return got
        per = 1 if live else batch_count(self.settings.batch_per_camera, self.settings.max_batch, len(replay))
        return self._xread(replay, block=None, count=per)

    def _xread(self, streams: dict[str, str], block: Optional[int],
               count: Optional[int] = None) -> list[Entry]:
        count = count or batch_count(self.settings.batch_per_camera, self.settings.max_batch, len(streams))
        entries = read_group(self.r, self.stage, self.worker_id, streams, count, block)
        for stream, es in split_by_stream(entries).items():
            cam = es[0].camera
            metrics.FRAMES_IN.labels(self.stage, cam).inc(len(es))
            metrics.ENTRY_AGE.labels(self.stage, cam).set(max(e.age_s or 0.0 for e in es))
        return entries

    def _screen_redelivered(self, entries: list[Entry]) -> list[Entry]:
        """Dead-letter entries delivered too often (they keep killing workers); keep the rest."""
        counts: dict[tuple[str, str], int] = {}  # (stream, id): ids repeat across streams
        for stream, es in split_by_stream(entries).items():
            got = claiming.delivery_counts(self.r, stream, self.stage, [e.id for e in es])
            counts.update({(stream, i): n for i, n in got.items()})
        poison = [e for e in entries if counts.get((e.stream, e.id), 0) > self.max_deliveries]
        if poison:
            self._commit(Outcome(dead=[(e, f"delivered {counts[e.stream, e.id]} times without being "
                                          "acked (it may crash workers)") for e in poison]))
        return [e for e in entries if counts.get((e.stream, e.id), 0) <= self.max_deliveries]

    # ---------------------------------------------------------------- handle (bisecting)

    def process(self, entries: list[Entry]) -> None:
        """Handle a batch; when ``handle`` raises, its halves, down to single entries."""
        self._handle_part(entries, blocked=set())
        self.metrics["batches"] += 1
        metrics.BATCH_SIZE.labels(self.stage).observe(len(entries))

    def _handle_part(self, entries: list[Entry], blocked: set[str]) -> None:
        entries = [e for e in entries if e.camera not in blocked]  # keep each camera's order
        if not entries:
            return
        self._batch = entries
        try:
            outcome = self.handle(entries)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:
            self.metrics["errors"] += 1
            if len(entries) == 1:
                self._failed(entries[0], exc, blocked)
                return
            log.warning("%s: batch of %d failed (%s: %s); retrying its halves", self.worker_id,
                        len(entries), exc.__class__.__name__, exc)
            mid = len(entries) // 2
            self._handle_part(entries[:mid], blocked)
            self._handle_part(entries[mid:], blocked)
            return
        finally:
            self._batch = []
        self._commit(outcome)

    def _failed(self, entry: Entry, exc: Exception, blocked: set[str]) -> None:
        """One entry failed alone: retried later (its camera waits), dead-lettered at last."""
        key = (entry.stream, entry.id)
        n = self.attempts.pop(key, 0) + 1
        if n >= self.max_attempts:
            self._commit(Outcome(dead=[(entry, f"failed {n} times: {exc.__class__.__name__}: {exc}")]))
            return
        self.attempts[key] = n
        log.warning("%s: camera %s entry %s failed (attempt %d of %d): %s: %s", self.worker_id,
                    entry.camera, entry.id, n, self.max_attempts, exc.__class__.__name__, exc,
                    exc_info=n == 1)
        blocked.add(entry.camera)
        self.backlog.add(entry.camera)

    def _commit(self, outcome: Outcome) -> None:
        self._committed = Outcome()
        self.write(outcome)
        done = self._committed
        self.metrics["entries"] += len(done.done) + len(done.dead)
        self.after_write(done)

    # ---------------------------------------------------------------- write

    def write(self, outcome: Outcome) -> None:
        """Global outputs and dead letters first, then per camera one fenced script: its
        outputs, state and acks, only while its lease is ours."""
        p = writing.plan(outcome, self.stage, dict(self.leases.values))
        try:
            writing.execute_global(self.r, p, self.stage, self.settings.deadletter_maxlen)
            results = writing.execute_fenced(self.r, self._script, p, self.settings.redis_wait_replicas,
                                             self.settings.redis_wait_ms)
        except redis.ResponseError as exc:
            self._write_failed(outcome.cameras(), exc)
            return
        self._report_behind(results.pop(writing.BEHIND, {}), {o.stream for o in outcome.outputs if o.maxlen})
        replicated = results.pop(writing.REPLICATED, None)
        if replicated is not None and replicated != self.settings.redis_wait_replicas:
            log.warning("%s: WAIT: %s of %d replicas acknowledged the batch within %d ms", self.worker_id,
                        replicated, self.settings.redis_wait_replicas, self.settings.redis_wait_ms)
        ok = set()
        for cam, res in results.items():
            if res == writing.OK:
                ok.add(cam)
            elif res == writing.FENCED:
                self.metrics["fenced"] += 1
                metrics.LEASE_CHANGES.labels(self.stage, "lost").inc()
                log.warning("%s: camera %s: the lease is no longer ours; nothing written or acked",
                            self.worker_id, cam)
                self.leases.forget(cam)
                self._drop(cam)
            elif isinstance(res, CONNECTION_ERRORS):
                raise res
            else:
                self._write_failed({cam}, res)
        self._record(outcome.only(ok))

    def _write_failed(self, cameras: set[str], exc: Exception) -> None:
        self.metrics["errors"] += 1
        log.error("%s: writing cameras %s failed (%s: %s); nothing of theirs acked, retried",
                  self.worker_id, ",".join(sorted(cameras)), exc.__class__.__name__, exc)
        self.backlog |= cameras & self.owned

    def _record(self, done: Outcome) -> None:
        if done.finished:  # the done marks (a global hash) once the fenced writes held
            self.r.hset(keys.done_key(self.stage), mapping=done.finished)
        for entry, reason in done.dead:
            log.warning("%s: camera %s entry %s dead-lettered: %s", self.worker_id, entry.camera,
                        entry.id, reason)
        for e in done.done:
            self.attempts.pop((e.stream, e.id), None)
            metrics.FRAMES_OUT.labels(self.stage, e.camera).inc()
        self.metrics["dead"] += len(done.dead)
        metrics.count_dead(self.stage, [reason for _, reason in done.dead])
        self.finished |= set(done.finished)
        for camera in done.finished:
            log.info("%s: camera %s reached its end of stream", self.worker_id, camera)
        self._committed = done

    def _done_everywhere(self) -> set[str]:
        return {text(c) for c in self.r.hkeys(keys.done_key(self.stage))}

    # ---------------------------------------------------------------- heartbeat / stop

    def heartbeat(self) -> None:
        heartbeat.beat(self.r, self.worker_id, self.stage, dict(self.metrics),
                       sorted(self.owned.copy()), self.clock(), self.settings.lease_ttl_s)

    def _shutdown(self) -> None:
        self.keeper.stop()
        self.metrics["state"] = "stopped"
        try:
            for cam in sorted(self.owned):
                self.leases.release(cam)
                metrics.forget_camera(self.stage, cam)
                self.on_released(cam)
            heartbeat.stop(self.r, self.worker_id)
        except CONNECTION_ERRORS as exc:
            log.warning("%s: could not release leases (%s); they expire by TTL", self.worker_id, exc)
        self.owned.clear()
        metrics.LEASES_HELD.labels(self.stage).set(0)
        log.info("%s: stopped after %d entries in %d batches (%d dead-lettered)", self.worker_id,
                 self.metrics["entries"], self.metrics["batches"], self.metrics["dead"])
