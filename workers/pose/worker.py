"""The pose stage: frames in, tracked skeletons out, one model call per batch.

The worker reads up to ``batch_per_camera`` frames from every camera it holds in one
XREADGROUP, decodes them, runs the pose model once over the whole batch, tracks people
per camera, and writes one skeleton entry per frame (frames with nobody in them too).

JPEGs decode in a small thread pool (OpenCV releases the GIL), and a model with ``prepare``
(both adapters) has each frame made ready for its network there too (resize, colour, layout);
they are handed to the model in the batch's order as each is ready
(``model.infer_prepared``): a model that runs frame by frame (MoveNet) infers the first
frame while the next ones decode, so decoding hides behind the model calls.

With motion gating on (setting ``motion_gating``, or a camera's ``motion:``), a frame in
which nothing moves (:mod:`workers.pose.motion`) is neither decoded in full nor given to
the model: its skeleton entry repeats the camera's last tracked people under the new
frame's seq and time, and the model still runs every ``keyframe_s``.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional

from shared import codec, keys, metrics
from shared.codec import DecodeError
from shared.redisio import lagging, registration, text
from shared.schemas import EndOfStream, Frame, Skeletons
from shared.settings import Settings
from shared.worker import Entry, Outcome, Output, StageWorker
from workers.pose.motion import MotionConfig, MotionGate, small_grey
from workers.pose.tracker import Tracker, TrackerConfig

log = logging.getLogger(__name__)

DECODE_THREADS = 2
_pool: Optional[ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def decode_pool() -> ThreadPoolExecutor:
    """The process's JPEG-decoding threads (one pool for every pose worker in it)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="pose-decode")
        return _pool


class PoseWorker(StageWorker):
    stage = keys.POSE_GROUP

    def __init__(self, settings: Settings, model, model_name: str,
                 cameras: Optional[list[str]] = None, worker_id: Optional[str] = None,
                 clock=time.time) -> None:
        super().__init__(settings, cameras, worker_id, clock)
        self.model = model
        self.model_name = model_name
        self.trackers: dict[str, Tracker] = {}
        self.gates: dict[str, MotionGate] = {}  # cameras with motion gating on
        self.last_people: dict[str, tuple] = {}  # camera -> the people of its last model run
        high, low = getattr(model, "track_thresholds", (0.0, 0.0))  # the model's score scale
        self.tracker_config = TrackerConfig(high_score=high, low_score=low)
        self.metrics.update(frames=0, frames_gated=0, skipped_stale=0, model_calls=0, model_s=0.0,
                            max_cameras_per_batch=0, max_frames_per_batch=0, batches_multi_camera=0)
        self._last_report = time.monotonic()

    def on_acquired(self, camera: str) -> None:
        """Resume tracking exactly where the last owner stopped (a takeover): from the tracker
        state it wrote with the acks of the frame that is last in the skeleton stream, else
        (no state, or one left from a stream since removed) from that last skeleton entry."""
        msg = None
        last = self.r.xrevrange(keys.skeletons_stream(camera), count=1)
        if last:
            try:
                msg = codec.decode_skeletons(last[0][1])
            except DecodeError:
                pass
        last_seq = msg.seq if isinstance(msg, Skeletons) else None
        tracker = self._stored_tracker(camera, last_seq)
        if tracker is None:
            tracker = Tracker(self.tracker_config)
            next_id = int(self.r.get(keys.next_track_key(camera)) or 1)
            tracker.restore(msg.people if isinstance(msg, Skeletons) else (), next_id)
            if isinstance(msg, Skeletons):
                log.info("camera %s: tracking resumed at frame %d with tracks %s", camera, msg.seq,
                         [p.track_id for p in msg.people])
        self.trackers[camera] = tracker
        self._motion_gate(camera)

    def _motion_gate(self, camera: str) -> None:
        """Gate ``camera``'s frames by motion when the settings or its registration (a camera
        file's ``motion:``) say so; a bad registration leaves the settings' choice."""
        s = self.settings
        given = registration(self.r, camera).get("motion") or {}
        given = dict(given) if isinstance(given, dict) else {}
        enabled = given.pop("enabled", None)
        if not (s.motion_gating if enabled is None else enabled):
            self.gates.pop(camera, None)
            return
        try:
            masks = tuple(tuple(map(tuple, m)) for m in given.pop("masks", None) or ())
            config = MotionConfig(**{"threshold": s.motion_threshold, "keyframe_s": s.motion_keyframe_s,
                                     **given, "masks": masks})
        except (ValueError, TypeError) as exc:
            log.warning("camera %s: motion settings %r ignored (%s); gating off", camera, given, exc)
            self.gates.pop(camera, None)
            return
        self.gates[camera] = MotionGate(config)
        log.info("camera %s: motion gating on (threshold %.4f, keyframe every %.1f s, %d masks)", camera,
                 config.threshold, config.keyframe_s, len(config.masks))

    def _stored_tracker(self, camera: str, last_seq: Optional[int]) -> Optional[Tracker]:
        """The tracker state stored with the frame ``last_seq``, or None."""
        raw = self.r.get(keys.tracker_state_key(camera))
        if raw is None:
            return None
        try:
            stored = json.loads(raw)
            tracker = Tracker.from_state(stored["tracker"], self.tracker_config)
            seq = stored["seq"]
        except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            log.warning("camera %s: unreadable tracker state (%s); resuming from skeletons", camera, exc)
            return None
        if seq != last_seq:
            log.info("camera %s: tracker state of frame %s does not match the skeleton stream (last frame "
                     "%s); resuming from skeletons", camera, seq, last_seq)
            return None
        log.info("camera %s: tracking resumed from its tracker state at frame %d", camera, seq)
        return tracker

    def on_released(self, camera: str) -> None:
        self.trackers.pop(camera, None)
        self.gates.pop(camera, None)
        self.last_people.pop(camera, None)

    def has_room(self, camera: str) -> bool:
        if self.settings.mode != "replay" and not keys.is_replay(camera):  # replay cameras: always
            return True
        limit = self.settings.replay_max_lag
        return not lagging(self.r, keys.skeletons_stream(camera), keys.ACTION_GROUP, limit)

    def handle(self, entries: list[Entry]) -> Outcome:
        out = Outcome()
        frames: list[tuple[Entry, Frame, bool]] = []  # (entry, frame, run the model on it)
        for entry in entries:
            try:
                msg = entry.decode(codec.decode_frame)
            except DecodeError as exc:
                out.dead.append((entry, f"undecodable frame: {exc}"))
                continue
            if isinstance(msg, EndOfStream):
                frames.append((entry, msg, False))  # keeps the camera's order
            elif self._stale(msg):
                self.metrics["skipped_stale"] += 1
                metrics.FRAMES_SKIPPED.labels(self.stage, entry.camera, "stale").inc()
                out.done.append(entry)
            else:
                frames.append((entry, msg, self._moves(msg)))
        ok, images = self._decode_images(frames, out)
        first = next(images, None)  # waits for the first decode; None: no frame to infer
        people = self._infer(itertools.chain([first], images)) if first is not None else []
        if any(True for _ in images):  # a model that stopped early would lose frames
            raise RuntimeError("the pose model did not take every frame of the batch")
        self._emit(ok, people, out)
        return out

    def _moves(self, frame: Frame) -> bool:
        """Whether the model runs on ``frame``: always without a gate; with one, when it moves,
        a keyframe is due, or the camera has no tracked people to repeat yet."""
        gate = self.gates.get(frame.camera)
        if gate is None:
            return True
        return gate.observe(small_grey(frame.jpeg), frame.ts, force=frame.camera not in self.last_people)

    def _stale(self, frame: Frame) -> bool:
        """Live: the frame waited in its stream longer than ``max_lag_s``, measured on the
        Redis server's clock (the read's TIME minus the entry id's time), not two hosts'."""
        if self.settings.mode != "live" or keys.is_replay(frame.camera):  # a replay drops nothing
            return False
        age = self.entry_age_s(frame)
        return age is not None and age > self.settings.max_lag_s

    def _decode_images(self, frames, out: Outcome) -> tuple[list, Iterator]:
        """``(ok, images)``: every frame's JPEG is queued for decoding (and the model's
        ``prepare``) at once; ``images`` yields them in the batch's order as each is ready.
        A corrupt JPEG goes to ``out.dead``; ``ok`` (the entries to emit, end-of-stream marks
        included, in order) is complete once ``images`` is exhausted."""
        pool, prepare = decode_pool(), getattr(self.model, "prepare", None)  # then infer_prepared
        jobs = [(entry, msg, pool.submit(_decode, msg, prepare) if run else None)
                for entry, msg, run in frames]
        ok: list = []

        def images():
            for entry, msg, job in jobs:
                if job is not None:
                    try:
                        image = job.result()
                    except DecodeError as exc:
                        out.dead.append((entry, str(exc)))
                        continue
                    ok.append((entry, msg, True))
                    yield image
                else:
                    ok.append((entry, msg, False))  # end of stream, or gated: nothing to infer
        return ok, images()

    def _infer(self, images: Iterator) -> list:
        t0 = time.perf_counter()
        counted = _Counted(images)
        infer = self.model.infer_prepared if hasattr(self.model, "prepare") else self.model.infer
        people = infer(counted)  # with ``prepare``, _decode made the images ready for the network
        seconds = time.perf_counter() - t0
        self.metrics["model_s"] += seconds
        metrics.INFERENCE_SECONDS.labels(self.stage, self.model_name).observe(seconds)
        metrics.INFERENCE_ITEMS.labels(self.stage, self.model_name).observe(counted.n)
        self.metrics["model_calls"] += 1
        if len(people) != counted.n:
            raise RuntimeError(f"pose model returned {len(people)} results for {counted.n} frames")
        return people

    def _emit(self, ok, people, out: Outcome) -> None:
        results = iter(people)
        cams: dict[str, int] = {}  # camera -> its last frame tracked in this batch
        n_gated = 0
        for entry, msg, inferred in ok:
            stream = keys.skeletons_stream(msg.camera)
            if isinstance(msg, EndOfStream):
                out.outputs.append(Output(stream, codec.encode_skeletons(msg)))
                out.finished[msg.camera] = msg.seq
            else:
                if inferred:
                    tracked = self.last_people[msg.camera] = tuple(self._track(msg.camera, next(results)))
                else:  # nothing moved: the camera's last people, unchanged
                    tracked = self.last_people[msg.camera]
                    metrics.POSE_FRAMES_GATED.labels(msg.camera).inc()
                    n_gated += 1
                skel = Skeletons(msg.camera, msg.seq, msg.ts, msg.width, msg.height,
                                 tuple(tracked), self.model_name, run=msg.run)
                out.outputs.append(Output(stream, codec.encode_skeletons(skel),
                                          self.settings.skeleton_maxlen))
                if self.settings.snapshot_frames:  # the frame with its skeletons, for event snapshots
                    out.outputs.append(Output(keys.recent_frames_stream(msg.camera),
                                              {**codec.encode_skeletons(skel), "jpeg": msg.jpeg},
                                              self.settings.snapshot_frames))
                cams[msg.camera] = msg.seq
            out.done.append(entry)
        for cam, seq in cams.items():
            out.sets[keys.next_track_key(cam)] = str(self.trackers[cam].next_id)
            state = {"seq": seq, "tracker": self.trackers[cam].to_state()}  # for a takeover (on_acquired)
            out.sets[keys.tracker_state_key(cam)] = json.dumps(state)
        self._count_batch(len(people), set(cams), n_gated)

    def _track(self, camera: str, people):
        tracker = self.trackers.get(camera)
        if tracker is None:
            tracker = self.trackers[camera] = Tracker(self.tracker_config)
        return tracker.update(people).people

    def _count_batch(self, n_frames: int, cams: set[str], n_gated: int = 0) -> None:
        m = self.metrics
        m["frames"] += n_frames + n_gated
        m["frames_gated"] += n_gated
        m["max_frames_per_batch"] = max(m["max_frames_per_batch"], n_frames)
        m["max_cameras_per_batch"] = max(m["max_cameras_per_batch"], len(cams))
        if len(cams) > 1:
            m["batches_multi_camera"] += 1
        if n_frames:
            log.debug("pose batch: %d frames from %d cameras (%s) in one model call", n_frames,
                      len(cams), ",".join(sorted(cams)))
        now = time.monotonic()
        if now - self._last_report >= 5.0:
            self._last_report = now
            inferred = m["frames"] - m["frames_gated"]
            log.info("%s: %d frames (%d without motion), %d model calls (%.1f frames/call, up to %d "
                     "cameras in one batch), %.1f ms/frame in the model, %d stale skipped", self.worker_id,
                     m["frames"], m["frames_gated"], m["model_calls"], inferred / max(1, m["model_calls"]),
                     m["max_cameras_per_batch"], 1000 * m["model_s"] / max(1, inferred), m["skipped_stale"])

    def after_write(self, outcome: Outcome) -> None:
        """Trim frames this worker has acked (replay streams are not trimmed by length), but
        none the archiver (group ``archive``, when the stream has one) has not yet stored."""
        last: dict[str, str] = {}
        for e in [*outcome.done, *(e for e, _ in outcome.dead)]:
            if e.stream not in last or _id_key(e.id) > _id_key(last[e.stream]):
                last[e.stream] = e.id
        if not last:
            return
        floors = group_floors(self.r, list(last), keys.ARCHIVE_GROUP)
        pipe = self.r.pipeline(transaction=False)
        for stream, entry_id in last.items():
            floor = floors.get(stream)
            if floor is not None and _id_key(floor) < _id_key(entry_id):
                entry_id = floor
            if entry_id != "0-0":
                pipe.xtrim(stream, minid=entry_id, approximate=False)
        pipe.execute()


def group_floors(r, streams: list[str], group: str) -> dict[str, str]:
    """Per stream that has ``group``: the lowest id the group still needs (its oldest pending
    entry; else its last delivered one, kept like the pose group's last acked)."""
    pipe = r.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
    floors, pending = {}, []
    for stream, groups in zip(streams, pipe.execute(raise_on_error=False)):
        for g in groups if isinstance(groups, list) else []:
            if text(g.get("name")) == group:
                floors[stream] = text(g.get("last-delivered-id"))
                if int(g.get("pending") or 0):
                    pending.append(stream)
    if pending:
        pipe = r.pipeline(transaction=False)
        for stream in pending:
            pipe.xpending(stream, group)
        for stream, summary in zip(pending, pipe.execute()):
            if summary and summary.get("min"):
                floors[stream] = text(summary["min"])
    return floors


def _decode(frame: Frame, prepare):
    """The frame's image (DecodeError for a bad JPEG), made ready by ``prepare`` when given."""
    image = codec.decode_jpeg(frame)
    return prepare(image) if prepare is not None else image


class _Counted:
    """An iterator that counts what it gave."""

    def __init__(self, it: Iterator) -> None:
        self.it, self.n = it, 0

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.it)
        self.n += 1
        return item


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
