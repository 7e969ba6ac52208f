"""The I/O loop of one replay job (run by the Celery task in :mod:`workers.jobs.celery_app`).

Exactly once across worker deaths: the job holds a lease (``keys.lease_key("job", replay
camera)``, a TTL renewed as it runs) so that no second copy of the task runs it at the same
time (a redelivered message finds it held and is retried later), and every item is
published in one script with the checkpoint, fenced by that lease (the producer's
publisher, :mod:`producer.publisher`). A copy that takes over after a kill continues after
the last published seq; an item is never published twice.

It registers the replay camera (``keys.CAMERAS_KEY``, with its rule overrides), publishes
at the job's pace while the stage it feeds keeps up (backpressure: nothing dropped), ends
with an EndOfStream and waits until the action stage has finished the camera, so that when
the job is DONE its events are all out. The cancel flag is looked at before every item and
during every wait (a cancel stops it within a second).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from typing import Callable, Iterator, Mapping, Optional

import redis

from producer.publisher import NOT_OURS, PUBLISHED, Publisher
from shared.durability import Durability
from shared import keys
from shared.errors import ActionstreamError
from shared.leases import Leases
from shared.redisio import ensure_group
from shared.settings import Settings
from workers.jobs import registry, skeleton_files
from workers.jobs import replay_sources as sources
from workers.jobs.replay import Checkpoint, JobSpec, Pacer, Progress, ReplayError, ReplayFailed

log = logging.getLogger(__name__)

REPORT_EVERY_S = 0.5
WAIT_STEP_S = 0.05


class Busy(ActionstreamError, RuntimeError):
    """Another copy of the job holds its lease (it runs, or its dead worker's lease has not
    expired yet): retry later."""


class LeaseLost(ActionstreamError, RuntimeError):
    """The job's lease was taken over while this copy ran: it stops, publishing nothing more."""


class Cancelled(ActionstreamError):
    pass


class Stopping(ActionstreamError):
    """The worker is shutting down: the job stops here (its checkpoint kept) to be requeued."""


class JobRunner:
    def __init__(self, r: redis.Redis, settings: Settings, spec: JobSpec,
                 report: Callable[[dict], None] = lambda meta: None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 worker_id: Optional[str] = None, stopping: Callable[[], bool] = lambda: False,
                 camera: Optional[str] = None) -> None:
        """``report``: gets the progress meta; ``stopping``: true once the worker shuts down;
        ``camera``: publish as this camera, not the replay camera (``up --skeletons``)."""
        self.r, self.settings, self.spec, self.stopping = r, settings, spec, stopping
        self.report, self.clock, self.sleep = report, clock, sleep
        self.camera = camera or spec.replay_camera
        self.stream = keys.stage_stream(spec.target, self.camera)
        worker_id = worker_id or f"jobs-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.leases = Leases(r, keys.JOB_STAGE, worker_id, settings.lease_ttl_s)
        # fenced by the lease, the checkpoint's seq the last one published, no trimming
        self.publisher = Publisher(r, self.stream, keys.job_checkpoint_key(self.camera),
                                   lease_key=self.leases.key(self.camera), count_field="published",
                                   durability=Durability.for_frames(settings))
        self._renewed = self._reported = 0.0
        self._warned_durable = -60.0
        self.skipped: list = []  # archived records that did not decode: (seq, reason)

    # ------------------------------------------------------------------ the job

    def run(self) -> dict:
        """Run (or resume, or finish) the job; its summary. :class:`Busy` when another copy
        holds it, :class:`ReplayFailed` when its source fails (the job is FAILED then)."""
        job = self.spec.job
        if registry.is_final(registry.state_of(self.r, job)["state"]):
            return self.summary()
        if not self.leases.try_acquire(self.camera):
            raise Busy(f"replay {job}: another worker runs it")
        self._renewed = time.monotonic()
        try:
            return self._run_held()
        except LeaseLost:
            log.warning("camera %s: replay %s lost its lease; another worker continues it", self.camera, job)
            return self.summary()
        except (ReplayError, ReplayFailed) as exc:  # its source: bad or gone
            self._end("FAILED", reason=str(exc))
            raise ReplayFailed(str(exc)) from None
        except Stopping:
            raise
        except Exception as exc:  # a bug: the job says so rather than stay RUNNING
            registry.set_state(self.r, job, "FAILED", self.clock, reason=f"{exc.__class__.__name__}: {exc}")
            raise
        finally:
            self.leases.release(self.camera)

    def _run_held(self) -> dict:
        spec, ckpt = self.spec, self.checkpoint()
        total = self._total(ckpt)
        self._register(ckpt, total)
        progress = Progress(total, ckpt.published, self.clock)
        if not ckpt.eos:
            if ckpt.published:
                log.info("camera %s: replay %s resumes after seq %s (%d published)", self.camera,
                         spec.job, ckpt.seq, ckpt.published)
            registry.set_state(self.r, spec.job, "RUNNING", self.clock, total=total)
            try:
                self._publish_all(ckpt.seq, progress)
            except Cancelled:
                return self._end("CANCELLED", reason="cancelled")
            self._end_stream()
        try:
            registry.set_state(self.r, spec.job, "DRAINING", self.clock)
            self._drain(progress)
        except Cancelled:
            return self._end("CANCELLED", reason="cancelled while the stages finished it")
        events = self.count_events()
        self.r.hdel(keys.CAMERAS_KEY, self.camera)  # finished by every stage: workers need it no more
        registry.set_state(self.r, spec.job, "DONE", self.clock, events=events, skipped=len(self.skipped))
        log.info("camera %s: replay %s done, %d items published, %d events", self.camera, spec.job,
                 self.checkpoint().published, events)
        return self.summary()

    def _end(self, state: str, reason: str) -> dict:
        self._end_stream()  # the stages finish the camera and free what they hold of it
        self.r.hdel(keys.CAMERAS_KEY, self.camera)  # no worker takes a cancelled or failed replay up again
        registry.set_state(self.r, self.spec.job, state, self.clock, reason=reason)
        log.info("camera %s: replay %s %s: %s", self.camera, self.spec.job, state.lower(), reason)
        return self.summary()

    def summary(self) -> dict:
        state = registry.state_of(self.r, self.spec.job)
        return dict(state, job=self.spec.job, camera=self.camera, published=self.checkpoint().published)

    # ------------------------------------------------------------------ pieces

    def checkpoint(self) -> Checkpoint:
        return Checkpoint.from_hash(self.r.hgetall(keys.job_checkpoint_key(self.camera)))

    def _total(self, ckpt: Checkpoint) -> Optional[int]:
        """Items the job reads. A first start whose archive holds nothing of it fails, naming
        the directory this worker looked in (it may not be the one the submit command saw)."""
        spec = self.spec
        if spec.source == "skeletons":  # its bad files are named once, as items() reads them
            return skeleton_files.check_skeletons(spec, warn=False)
        if spec.source != "archive":
            return sources.check_videos(spec) or None
        reader = sources.open_reader(self.settings)
        if ckpt.published or ckpt.eos:  # resumed: retention may have taken some since
            return reader.count(spec.camera, spec.kind, spec.start_ts, spec.end_ts)
        try:
            return sources.check_archive(reader, spec)
        except ReplayError as exc:
            raise ReplayFailed(f"{exc}; the jobs worker reads ACTIONSTREAM_ARCHIVE_DIR (else <data "
                               "dir>/archive): give it the directory the camera was archived to") from None

    def items(self, after_seq: Optional[int]) -> Iterator[sources.Item]:
        spec, settings = self.spec, self.settings
        if spec.source == "archive":
            return sources.archive_items(sources.open_reader(settings), spec, after_seq, self.skipped)
        if spec.source == "skeletons":
            return skeleton_files.skeleton_items(spec, after_seq, self.skipped, self.camera)
        return sources.video_items(spec, after_seq, settings.frame_width, settings.jpeg_quality)

    def _register(self, ckpt: Checkpoint, total: Optional[int]) -> None:
        """The replay camera for the workers, with its rule overrides (the action worker
        applies them to this camera only); its done marks cleared on a first start."""
        spec = self.spec
        ensure_group(self.r, self.stream, spec.target)
        desc = {"source": spec.describe(), "kind": "replay", "mode": "replay", "job": spec.job,
                "target": spec.target, "frames": total or 0, "rules": spec.rules}
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(keys.CAMERAS_KEY, self.camera, json.dumps(desc))
        if ckpt.published == 0 and not ckpt.eos:
            for stage in (keys.POSE_GROUP, keys.ACTION_GROUP):
                pipe.hdel(keys.done_key(stage), self.camera)
        pipe.execute()

    def _publish_all(self, after_seq: Optional[int], progress: Progress) -> None:
        pacer = Pacer(self.spec.speed, self.clock)
        for item in self.items(after_seq):
            self._wait(pacer.delay(item.ts))
            while self._lagging():
                self._wait(WAIT_STEP_S)
            self._check()
            done = self._put(item.seq, item.fields)
            progress.advance(done)
            self._progress(progress, "publishing")
        self._progress(progress, "publishing", force=True)

    def _put(self, seq, fields: Mapping) -> int:
        """Publish one item (or ``'eos'``) with the checkpoint; 1, or 0 when it already was.
        With ``durable_frames`` an item is confirmed durable (as the producer's frames are) and,
        lost in a failover, published again before the next: never skipped."""
        eos = seq == "eos"  # one end of stream per job ('1'), which leaves the checkpoint's seq
        first = None
        while True:
            res = self.publisher.put(fields, mark=None if eos else seq, eos="1" if eos else "",
                                     lease=self.leases.value(self.camera))
            if res == NOT_OURS:
                raise LeaseLost(self.camera)
            first = res if first is None else first
            why = None if eos else self.publisher.confirm(seq)
            if why is None:
                return 1 if first == PUBLISHED else 0
            if time.monotonic() - self._warned_durable >= 60.0:  # at most once a minute
                self._warned_durable = time.monotonic()
                log.warning("job %s: item %s not confirmed durable (%s); published and confirmed again",
                            self.spec.job, seq, why)
            self._check()
            self.sleep(self.publisher.durability.timeout_ms / 1000)

    def _end_stream(self) -> None:
        from shared import codec
        from shared.schemas import EndOfStream

        eos = EndOfStream(self.camera, self.checkpoint().end_seq)
        encode = codec.encode_frame if self.spec.target == keys.POSE_GROUP else codec.encode_skeletons
        self._put("eos", encode(eos))

    def _lagging(self) -> bool:
        """Backpressure: the stage fed has this many entries unread or unacked."""
        return bool(self.publisher.behind(self.settings.replay_max_lag, group=self.spec.target))

    def _drain(self, progress: Progress) -> None:
        """Until the action stage has passed the camera's end of stream (its events are out)."""
        while not self.r.hexists(keys.done_key(keys.ACTION_GROUP), self.camera):
            self._progress(progress, "draining")
            self._wait(0.2)

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` in short steps, keeping the lease and heeding a cancel."""
        end = time.monotonic() + seconds
        while True:
            self._check()
            left = end - time.monotonic()
            if left <= 0:
                return
            self.sleep(min(WAIT_STEP_S, left))

    def _check(self) -> None:
        """Raise Cancelled when the job was cancelled, Stopping when the worker shuts down;
        renew the lease when due."""
        if registry.cancelled(self.r, self.spec):
            raise Cancelled()
        if self.stopping():
            raise Stopping()
        now = time.monotonic()
        if now - self._renewed >= self.settings.lease_ttl_s / 3:
            if not self.leases.renew(self.camera):
                raise LeaseLost(self.camera)
            self._renewed = now

    def _progress(self, progress: Progress, phase: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._reported >= REPORT_EVERY_S:
            self._reported = now
            self.report(progress.meta(phase))

    def count_events(self) -> int:
        """The replay's events in the replay events stream (the events stream for a plain camera)."""
        n, start = 0, "-"
        stream = keys.REPLAY_EVENTS_STREAM if keys.is_replay(self.camera) else keys.EVENTS_STREAM
        while True:
            batch = self.r.xrange(stream, min=start, count=1000)
            for _, fields in batch:
                n += json.loads(fields[b"event"]).get("camera") == self.camera
            if len(batch) < 1000:
                return n
            start = "(" + batch[-1][0].decode()
