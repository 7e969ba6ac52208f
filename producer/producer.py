"""The producer: read a source, JPEG-encode each frame, XADD it to the camera's stream.

``live`` mode paces a file at its frame rate and trims the stream (``MAXLEN ~``); frames
that cannot be written while Redis is away are dropped and counted. ``replay`` mode loses
nothing: it waits while a consumer group of the stream lags (backpressure: the pose stage,
and the archiver, whose unstored frames the pose stage does not trim) and while Redis is
away, and runs as fast as the queue takes frames unless ``fps`` is given. With
``durable_frames`` each frame is confirmed durable (:mod:`shared.durability`) before the next
one, in either mode: written and confirmed again until it is, never skipped.

A producer carries an epoch (ARCHITECTURE.md, invariant 4): each start increments the camera's
``epoch`` in Redis and continues its ``seq`` after the last one published, so a restarted
producer is not ignored downstream (stages drop a seq that is not after the last one).
Live frames are stamped at capture time. A file read as fast as the queue takes it
(``replay`` mode, no ``fps``) is stamped as if it had been recorded just before the
producer started: its last frame at the start time, so no frame's time lies ahead of
the clock (an event's ``ts_end`` is never after its ``emitted_at``). A paced file starts
at the start time and is published no earlier than each frame's time.

Every frame carries the producer's run (:func:`shared.schemas.run_id`: the epoch and a
digest of the source's identity, its crop and width; for a live source also the start
time), which the pose stage copies onto its skeletons and the action stage puts into
event ids: two runs of one camera id that read different sources never share an id.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Callable, Optional

import numpy as np

from shared import codec, heartbeat, keys, metrics
from shared.backoff import backoff_delay
from shared.durability import Durability
from shared.redisio import CONNECTION_ERRORS, connect, ensure_group, redact
from shared.schemas import EndOfStream, Frame, run_id
from shared.settings import Camera, Settings, SettingsError
from producer.publisher import PUBLISHED, Publisher
from producer.sources import Source, SourceError, crop_and_resize, identity, jpeg_frame, open_source

log = logging.getLogger(__name__)


class Producer:
    """Publishes one camera. Nothing happens until :meth:`run`."""

    def __init__(self, settings: Settings, camera: Camera,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.camera = camera
        self.mode = camera.mode or settings.mode
        self.clock = clock
        self.sleep = sleep
        self.stream = keys.frames_stream(camera.id)
        self.stats = {"frames": 0, "dropped": 0, "reconnects": 0, "source_reopens": 0,
                      "unconfirmed": 0, "state": "starting", "fps": 0.0}
        self.durability = Durability.for_frames(settings)
        self._warned: dict[str, float] = {}  # what was warned about -> when (once a minute each)
        self._stop = False
        self._last_beat = 0.0
        self._last_frames = 0
        self.epoch = 0
        self.run_id = ""
        self.first_seq = 0
        self.key = keys.producer_key(camera.id)
        self.r = None

    def request_stop(self, *_) -> None:
        self._stop = True

    def run(self, max_frames: Optional[int] = None) -> int:
        source = open_source(self.camera.source, self.camera.fps)  # SourceError -> caller
        url = self.settings.redis_target
        self.r = connect(url)
        self.publisher = Publisher(self.r, self.stream, self.key, durability=self.durability)
        log.info("camera %s: %s source %s at %.1f fps, mode %s, redis %s", self.camera.id,
                 source.kind, source.spec, source.fps, self.mode, redact(url))
        self._until_written(self._register, source)
        seq = self._publish_all(source, max_frames)
        source.close()
        if source.finite or max_frames is not None:
            eos = codec.encode_frame(EndOfStream(self.camera.id, seq))
            self._until_written(lambda: self._write(eos, seq))
        self.stats["state"] = "finished"
        self._beat(force=True)
        log.info("camera %s: published %d frames (seq %d to %d, epoch %d, run %s), dropped %d",
                 self.camera.id, seq - self.first_seq, self.first_seq, seq - 1, self.epoch, self.run_id,
                 self.stats["dropped"])
        return 0

    def _register(self, source: Source) -> None:
        ensure_group(self.r, self.stream, keys.POSE_GROUP)
        if heartbeat.live_workers(self.r, keys.ARCHIVE_GROUP):  # archived from the first frame on,
            for stream in keys.archived_streams(self.camera.id).values():  # not from its next relist
                ensure_group(self.r, stream, keys.ARCHIVE_GROUP)
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(self.key, "epoch", 1)
        pipe.hget(self.key, "seq")
        epoch, seq = pipe.execute()
        self.epoch, self.first_seq = int(epoch), int(seq or 0)
        self.run_id = self._run_id(source)
        if self.epoch > 1:
            log.info("camera %s: producer epoch %d continues at seq %d", self.camera.id, self.epoch,
                     self.first_seq)
        desc = {"source": source.spec, "kind": source.kind, "fps": source.fps, "mode": self.mode,
                "frames": source.frame_count, "epoch": self.epoch, "run": self.run_id}
        if getattr(self.camera, "rules", None) is not None:  # the camera file's own alert rule
            desc["rules"] = self.camera.rules.model_dump(exclude_none=True)
        if getattr(self.camera, "motion", None) is not None:  # the camera file's own motion gating
            desc["motion"] = self.camera.motion.model_dump(exclude_none=True)
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(keys.CAMERAS_KEY, self.camera.id, json.dumps(desc))
        for stage in (keys.POSE_GROUP, keys.ACTION_GROUP):
            pipe.hdel(keys.done_key(stage), self.camera.id)
        pipe.execute()

    def _run_id(self, source: Source) -> str:
        """This run's id: the epoch and a digest of what is read (see the module doc)."""
        try:
            what = identity(source)
        except OSError as exc:  # the file went away since it was opened: its spec then
            log.warning("camera %s: source %s cannot be identified (%s)", self.camera.id, source.spec, exc)
            what = f"{source.kind}|{source.spec}"
        what += f"|crop={self.camera.crop}|width={self.camera.width or self.settings.frame_width}"
        if not source.finite:  # a live source is never the same twice
            what += f"|started={self.clock()!r}"
        return run_id(self.epoch, what)

    def _publish_all(self, source: Source, max_frames: Optional[int]) -> int:
        seq, t0 = self.first_seq, self.clock()
        pace = self.mode == "live" or self.camera.fps is not None
        if source.finite and not pace:  # stamped to end at the start time (see the module doc)
            t0 -= source.frame_count / source.fps
        self.stats["state"] = "running"
        while not self._stop:
            try:
                for image in source.frames():
                    captured = self.clock()  # live frames: stamped when captured
                    if self._stop or (max_frames is not None and seq - self.first_seq >= max_frames):
                        return seq
                    ts = t0 + (seq - self.first_seq) / source.fps
                    if pace:
                        self._wait_until(ts)
                    self._publish(self._frame(image, seq, ts if source.finite else captured))
                    seq += 1
                return seq
            except SourceError as exc:  # a live source was lost: reopen with backoff
                self._reopen(source, exc)
        return seq

    def _frame(self, image: np.ndarray, seq: int, ts: float) -> Frame:
        try:
            image = crop_and_resize(image, self.camera.crop, self.camera.width or self.settings.frame_width)
        except SourceError as exc:  # a crop outside the frame: bad input, not a lost source
            raise SettingsError(f"camera {self.camera.id}: {exc}; give a --crop inside the frame") from None
        return jpeg_frame(self.camera.id, seq, ts, image, self.settings.jpeg_quality, self.run_id)

    def _publish(self, frame: Frame) -> None:
        fields = codec.encode_frame(frame)
        cam = self.camera.id
        metrics.FRAMES_IN.labels("producer", cam).inc()
        if self.mode == "replay":
            self._until_written(self._wait_for_room)
            self._until_written(lambda: self._write(fields, frame.seq + 1))
            metrics.FRAMES_OUT.labels("producer", cam).inc()
        else:
            try:
                self._write(fields, frame.seq + 1, maxlen=self.settings.live_maxlen)
                metrics.FRAMES_OUT.labels("producer", cam).inc()
            except CONNECTION_ERRORS as exc:
                self.stats["dropped"] += 1
                metrics.FRAMES_SKIPPED.labels("producer", cam, "redis_unreachable").inc()
                self._reconnect_pause(exc)
        self.stats["frames"] += 1
        self._beat()

    def _xadd(self, fields: dict, next_seq: int, maxlen: Optional[int] = None) -> bool:
        """XADD ``fields`` and record ``next_seq`` as where a restart continues, in one script
        that refuses what was already published (:mod:`producer.publisher`): a write retried
        after an error that left its fate unknown (a lost reply, a failover) adds nothing
        twice. False when refused. An end of stream is tagged with the epoch: each epoch's is
        published once."""
        eos = f"eos:{self.epoch}:{fields['seq']}" if fields.get("kind") == "eos" else ""
        return self.publisher.put(fields, mark=next_seq, eos=eos, maxlen=maxlen) == PUBLISHED

    def _write(self, fields: dict, next_seq: int, maxlen: Optional[int] = None) -> None:
        """:meth:`_xadd`, then (``durable_frames``) its confirmation (:mod:`shared.durability`:
        the producer hash's seq has reached ``next_seq`` on the stream's node, then WAIT and/or
        WAITAOF). Unconfirmed: written again (the script adds it only where it was lost) and
        confirmed again until it is, never skipped; each try counted in
        ``actionstream_durable_waits_total{stream="frames"}``."""
        while True:
            self._xadd(fields, next_seq, maxlen)
            why = self.publisher.confirm(next_seq)
            if why is None:
                return
            self.stats["unconfirmed"] += 1
            self.stats["state"] = "waiting (durability)"
            self._warn("durable", "camera %s: frame %s not confirmed durable (%s); written and confirmed "
                       "again", self.camera.id, fields["seq"], why)
            if self._stop:
                log.warning("camera %s: stopping with frame %s unconfirmed", self.camera.id, fields["seq"])
                return
            self.sleep(self.durability.timeout_ms / 1000)  # an error (AOF off) answers at once

    def _warn(self, what: str, msg: str, *args) -> None:
        """A warning about ``what``, at most once a minute."""
        now = time.monotonic()
        if now - self._warned.get(what, -60.0) >= 60.0:
            self._warned[what] = now
            log.warning(msg, *args)

    def _lagging(self) -> bool:
        """Backpressure: a consumer group of the stream (the pose stage's, the archiver's) has
        ``replay_max_lag`` or more entries unread or unacked. The pose stage trims only what the
        archive group has stored, so without this a stopped archiver would let the stream grow
        without bound; a group other than the pose stage's that holds the producer back is a
        warning (once a minute) and ``actionstream_stream_group_behind_entries``."""
        limit = self.settings.replay_max_lag
        behind = self.publisher.behind(limit)
        for group, n in behind.items():
            if group != keys.POSE_GROUP:
                metrics.STREAM_BEHIND.labels(self.stream, group).set(n)
                self._warn(f"behind:{group}", "camera %s: frames held back: consumer group %r of %s has %d "
                           "entries unread or unacked (limit %d); start its consumer (the archiver), or "
                           "remove the group (XGROUP DESTROY)", self.camera.id, group, self.stream, n, limit)
        return bool(behind)

    def _wait_for_room(self) -> None:
        waited = False
        while not self._stop and self._lagging():
            waited = True
            self.stats["state"] = "waiting (backpressure)"
            self.sleep(0.02)
        if waited and self._warned:  # caught up: no group is behind now
            for what in [w for w in self._warned if w.startswith("behind:")]:
                metrics.STREAM_BEHIND.labels(self.stream, what.split(":", 1)[1]).set(0)
        self.stats["state"] = "running"

    def _until_written(self, action: Callable, *args) -> None:
        """Run ``action`` until Redis takes it (replay: nothing is lost)."""
        attempt = 0
        while True:
            try:
                return action(*args)
            except CONNECTION_ERRORS as exc:
                if self._stop:
                    raise
                self._reconnect_pause(exc, backoff_delay(attempt, 0.2, 10.0))
                attempt += 1

    def _reconnect_pause(self, exc: BaseException, delay: Optional[float] = None) -> None:
        """Count the outage and sleep ``delay`` (None: live mode's pause per dropped frame,
        0.25 to 0.75 s)."""
        delay = backoff_delay(0, 0.5, 0.5) if delay is None else delay
        self.stats["state"] = "disconnected"
        self.stats["reconnects"] += 1
        metrics.RECONNECTS.labels("producer", "redis").inc()
        log.warning("camera %s: redis unreachable (%s); retrying in %.1f s", self.camera.id, exc, delay)
        self.sleep(delay)

    def _reopen(self, source: Source, exc: SourceError) -> None:
        attempt = 0
        self.stats["state"] = "source lost"
        log.warning("camera %s: %s; reopening", self.camera.id, exc)
        while not self._stop:
            self.sleep(backoff_delay(attempt, 0.5, 30.0))
            try:
                source.reopen()
                self.stats["source_reopens"] += 1
                metrics.RECONNECTS.labels("producer", "source").inc()
                log.info("camera %s: source reopened", self.camera.id)
                self.stats["state"] = "running"
                return
            except SourceError as again:
                log.warning("camera %s: reopen failed (%s)", self.camera.id, again)
                attempt += 1

    def _wait_until(self, ts: float) -> None:
        delay = ts - self.clock()
        if delay > 0:  # behind real time we publish as fast as we read
            self.sleep(delay)

    def _beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_beat < 2.0:
            return
        if self._last_beat:
            self.stats["fps"] = round((self.stats["frames"] - self._last_frames) / (now - self._last_beat), 2)
        self._last_beat, self._last_frames = now, self.stats["frames"]
        log.info("camera %s: %s, %d frames, %.1f fps, %d dropped", self.camera.id,
                 self.stats["state"], self.stats["frames"], self.stats["fps"], self.stats["dropped"])
        try:
            self.r.set(keys.worker_key(f"producer-{self.camera.id}"),
                       json.dumps(dict(self.stats, camera=self.camera.id, stage="producer")), ex=30)
        except CONNECTION_ERRORS:
            pass
