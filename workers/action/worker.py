"""The action stage: skeletons in, action events out.

The pure part is :class:`~workers.action.core.ActionCore` (windows on the card's time grid,
one classifier call per batch, rules, the still-down watch). After each batch the worker
writes every classified window's top label to the camera's scores stream, each event once
(a SET NX guard on its deterministic id) to the events stream and the pub/sub channel, and
each touched camera's state (window phase, rule state; :meth:`ActionCore.state`) under
``keys.action_state_key(camera)`` together with the batch's acks. A worker taking a camera
over rebuilds its windows from the processed tail of the skeleton stream and applies that
state, so it continues exactly where the previous owner stopped: the same windows, the same
event ids.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from shared import codec, keys, metrics
from shared.codec import DecodeError
from shared.durability import Durability, DurabilityError
from shared.redisio import processed_tail, registration
from shared.schemas import EndOfStream, Event, Skeletons
from shared.settings import Settings
from shared.worker import Entry, Outcome, Output, StageWorker
from workers.action.classifier import ActionClassifier
from workers.action.core import ActionCore, select_tail
from workers.action.confirm import fall_confirmation
from workers.action.rules import Rules, rules_for

log = logging.getLogger(__name__)

EVENT_GUARD_TTL_S = 7 * 24 * 3600

_WRITE_EVENT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[2])
  if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[2]) end
  return 1
end
return 0
"""


def rules_from_settings(settings: Settings, labels, fps: float = 30.0) -> Rules:
    """The alert rules of ``settings`` for a model with ``labels`` (``fallen`` where the
    model has ``falling``), ``falling`` confirmed by the posture at the window's end unless
    ``settings.confirm_falls`` is off (``fps``: the model card's)."""
    return Rules(rules_for(labels, settings.alert_labels, settings.alert_threshold,
                           settings.alert_consecutive, settings.alert_cooldown_s),
                 confirm=fall_confirmation(fps) if settings.confirm_falls else None)


class ActionWorker(StageWorker):
    stage = keys.ACTION_GROUP

    def __init__(self, settings: Settings, classifier: ActionClassifier, rules: Rules,
                 cameras: Optional[list[str]] = None, worker_id: Optional[str] = None,
                 clock=time.time) -> None:
        super().__init__(settings, cameras, worker_id, clock)
        self.classifier = classifier
        self.rules = rules
        self.core = ActionCore(classifier, rules, stride=settings.stride,
                               min_frames=settings.min_frames,
                               fallen_after_s=settings.fallen_after_s)
        self.pending_events: list[Event] = []
        self.metrics.update(skeletons=0, windows=0, classify_calls=0, classify_s=0.0,
                            events=0, duplicates=0)
        self._write_event = None
        self._attempted: set[str] = set()
        self._last_report = time.monotonic()

    @property
    def windows(self):
        return self.core.windows

    def on_acquired(self, camera: str) -> None:
        """Continue the camera where its last owner stopped: windows rebuilt from the
        processed tail of its skeleton stream, then the owner's stored state applied."""
        state = self.r.get(keys.action_state_key(camera))
        self._camera_rules(camera)
        tail = self._tail(camera, self.core.tail_seconds())
        self.core.rebuild(camera, tail, state)
        if tail or state is not None:
            log.info("camera %s: windows rebuilt from %d processed skeleton entries (%s)", camera,
                     len(tail), "with the stored state" if state is not None else "no stored state")

    def _tail(self, camera: str, seconds: float) -> list:
        """The processed messages of the camera's skeleton stream covering ``seconds``."""
        stream, count = keys.skeletons_stream(camera), 2 * self.classifier.card.window
        while True:
            raw = processed_tail(self.r, stream, self.stage, count)
            msgs = []
            for _, fields in raw:
                try:
                    msgs.append(codec.decode_skeletons(fields))
                except DecodeError:
                    continue
            tail = select_tail(msgs, seconds)
            if len(raw) < count or len(tail) < len(msgs):
                return tail
            count *= 2

    def _camera_rules(self, camera: str) -> None:
        """A camera's own rule (``rules`` in its registration: a replay's overrides, a camera
        file's ``rules:``), if any."""
        given = registration(self.r, camera).get("rules") or {}
        try:
            self.rules.override(camera, given.get("threshold"), given.get("consecutive"),
                                given.get("confirm_falls"))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("camera %s: rule overrides %r ignored (%s)", camera, given, exc)
            self.rules.clear_override(camera)
            return
        if given:
            log.info("camera %s: its own rules %s", camera, given)

    def on_released(self, camera: str) -> None:
        self.core.forget_camera(camera)
        self.rules.clear_override(camera)

    def handle(self, entries: list[Entry]) -> Outcome:
        out = Outcome()
        msgs = []
        for entry in entries:
            try:
                msg = entry.decode(codec.decode_skeletons)
            except DecodeError as exc:
                out.dead.append((entry, f"undecodable skeletons: {exc}"))
                continue
            msgs.append(msg)
            out.done.append(entry)
            if isinstance(msg, EndOfStream):
                out.finished[msg.camera] = msg.seq
            elif isinstance(msg, Skeletons):
                self.metrics["skeletons"] += 1
        t0 = time.perf_counter()
        try:
            result = self.core.process(msgs)
        except Exception:
            self._restore({m.camera for m in msgs})  # the batch is retried (or bisected)
            raise
        if result.refs:
            self._count(result, time.perf_counter() - t0)
            self._scores(result, out)
        self.pending_events.extend(result.events)
        for camera in result.cameras:
            out.sets[keys.action_state_key(camera)] = self.core.state(camera)
        return out

    def _restore(self, cameras: set[str]) -> None:
        """Back to the state of the last written batch for ``cameras`` (from Redis)."""
        for camera in sorted(cameras & self.owned):
            self.on_acquired(camera)

    def _count(self, result, seconds: float) -> None:
        self.metrics["classify_s"] += seconds
        model = self.classifier.card.name
        metrics.INFERENCE_SECONDS.labels(self.stage, model).observe(seconds)
        metrics.INFERENCE_ITEMS.labels(self.stage, model).observe(len(result.refs))
        self.metrics["classify_calls"] += 1
        self.metrics["windows"] += len(result.refs)
        self._report()

    def _scores(self, result, out: Outcome) -> None:
        labels = self.classifier.card.labels
        for ref, p in zip(result.refs, result.probs):
            top = int(np.argmax(p))
            out.outputs.append(Output(keys.scores_stream(ref.camera), {
                "track_id": ref.track_id, "frame_start": ref.frame_start, "frame_end": ref.frame_end,
                "label": labels[top], "score": f"{float(p[top]):.4f}"}, self.settings.skeleton_maxlen))

    def write(self, outcome: Outcome) -> None:
        """Events first (guarded, idempotent), confirmed durable as configured
        (:mod:`shared.durability`), then the fenced outputs, state and acks. A camera whose
        write did not land (fenced, an error, events not confirmed) is rebuilt from Redis, so
        its retried entries are processed again from the state last written (the same ids)."""
        if self._write_event is None:
            self._write_event = self.r.register_script(_WRITE_EVENT)
        events, self.pending_events = self.pending_events, []  # a retried batch makes the same ids
        for event in events:
            self._emit(event)
        self._attempted = outcome.cameras()
        if events and not self._durable(events, outcome):
            return
        super().write(outcome)

    def _durable(self, events: list[Event], outcome: Outcome) -> bool:
        """The events are durable (or no durability is asked for); if not, nothing of the batch
        is acked: it is retried, and its events are written again where a failover lost them."""
        durability = Durability.for_events(self.settings)
        why = durability.confirm(self.r, keys.EVENTS_STREAM, [keys.event_guard_key(e.id) for e in events])
        if why is None:
            return True
        self._write_failed(outcome.cameras(), DurabilityError(f"events not confirmed durable: {why}"))
        time.sleep(durability.timeout_ms / 1000)  # an error (AOF off) answers at once: no busy loop
        return False

    def after_write(self, outcome: Outcome) -> None:
        failed, self._attempted = self._attempted - outcome.cameras(), set()
        self._restore(failed)

    def _emit(self, event: Event) -> None:
        raw = codec.encode_event(event)
        replay = keys.is_replay(event.camera)  # its own stream, never the live stream or channel
        stream = keys.REPLAY_EVENTS_STREAM if replay else keys.EVENTS_STREAM
        wrote = self._write_event(
            keys=[keys.event_guard_key(event.id), stream],
            args=[EVENT_GUARD_TTL_S, raw, "" if replay else keys.EVENTS_CHANNEL, self.settings.events_maxlen])
        if wrote:
            self.metrics["events"] += 1
            metrics.EVENTS.labels(event.label).inc()
            log.info("camera %s track %d: %s %.2f (frames %d-%d) event %s", event.camera,
                     event.track_id, event.label, event.score, event.frame_start,
                     event.frame_end, event.id)
        else:
            self.metrics["duplicates"] += 1
            metrics.EVENT_DUPLICATES.inc()
            log.info("camera %s track %d: event %s was already written; not repeated",
                     event.camera, event.track_id, event.id)

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report < 5.0:
            return
        self._last_report = now
        m = self.metrics
        log.info("%s: %d skeleton frames, %d windows in %d classifier calls (%.1f windows/call, "
                 "%.1f ms/window), %d events", self.worker_id, m["skeletons"], m["windows"],
                 m["classify_calls"], m["windows"] / max(1, m["classify_calls"]),
                 1000 * m["classify_s"] / max(1, m["windows"]), m["events"])
