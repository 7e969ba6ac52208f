"""The action stage: skeletons in, action events out.

Per camera a :class:`CameraWindows` keeps each track's last ``window`` frames; after a
batch of skeleton entries, every window that is due — across all cameras — goes through
the classifier in one call, the rules turn scores into events, and each event is written
once (a SET NX guard on its deterministic id) to the events stream and the pub/sub channel.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from shared import codec, keys
from shared.codec import DecodeError
from shared.redisio import processed_tail
from shared.schemas import EndOfStream, Event, Skeletons
from shared.settings import Settings
from shared.worker import Entry, Outcome, Output, StageWorker
from workers.action.classifier import ActionClassifier
from workers.action.rules import Rule, Rules
from workers.action.window import CameraWindows, stack_windows

log = logging.getLogger(__name__)

EVENT_GUARD_TTL_S = 7 * 24 * 3600

_WRITE_EVENT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[2])
  return 1
end
return 0
"""


def rules_from_settings(settings: Settings, labels) -> Rules:
    wanted = [label for label in settings.alert_labels if label in labels]
    missing = sorted(set(settings.alert_labels) - set(wanted))
    if missing:
        log.warning("alert labels %s are not among the model's labels %s", missing, list(labels))
    return Rules([Rule(label, settings.alert_threshold, settings.alert_consecutive,
                       settings.alert_cooldown_s) for label in wanted])


class ActionWorker(StageWorker):
    stage = keys.ACTION_GROUP

    def __init__(self, settings: Settings, classifier: ActionClassifier, rules: Rules,
                 cameras: Optional[list[str]] = None, worker_id: Optional[str] = None,
                 clock=time.time) -> None:
        super().__init__(settings, cameras, worker_id, clock)
        self.classifier = classifier
        self.rules = rules
        self.windows: dict[str, CameraWindows] = {}
        self.pending_events: list[Event] = []
        self.metrics.update(skeletons=0, windows=0, classify_calls=0, classify_s=0.0,
                            events=0, duplicates=0)
        self._write_event = None
        self._last_report = time.monotonic()

    def _new_windows(self, camera: str) -> CameraWindows:
        card = self.classifier.card
        return CameraWindows(camera=camera, window=card.window, stride=self.settings.stride,
                             num_person=card.num_person, min_frames=self.settings.min_frames)

    def on_acquired(self, camera: str) -> None:
        """Rebuild the camera's windows from the skeletons already processed (a takeover),
        so no window is lost; those windows were classified by the previous owner."""
        windows = self._new_windows(camera)
        tail = processed_tail(self.r, keys.skeletons_stream(camera), self.stage,
                              self.classifier.card.window)
        for _, fields in tail:
            try:
                msg = codec.decode_skeletons(fields)
            except DecodeError:
                continue
            if isinstance(msg, Skeletons):
                windows.push(msg)
                windows.due()  # classified before: advance the stride bookkeeping only
        windows.ended()
        if tail:
            log.info("camera %s: windows rebuilt from %d processed skeleton entries", camera, len(tail))
        self.windows[camera] = windows

    def on_released(self, camera: str) -> None:
        self.windows.pop(camera, None)
        self.rules.forget_camera(camera)

    def handle(self, entries: list[Entry]) -> Outcome:
        out = Outcome()
        refs = []
        for entry in entries:
            try:
                msg = entry.decode(codec.decode_skeletons)
            except DecodeError as exc:
                out.dead.append((entry, f"undecodable skeletons: {exc}"))
                continue
            windows = self.windows.get(entry.camera)
            if windows is None:
                windows = self.windows[entry.camera] = self._new_windows(entry.camera)
            if isinstance(msg, EndOfStream):
                refs.extend(windows.flush())  # classify what the last stride left over
                out.finished[msg.camera] = msg.seq
            else:
                windows.push(msg)
                refs.extend(windows.due())
                self.metrics["skeletons"] += 1
                for track_id in windows.ended():
                    self.rules.forget(entry.camera, track_id)
            out.done.append(entry)
        if refs:
            self.pending_events.extend(self._classify(refs, out))
        return out

    def _classify(self, refs, out: Outcome) -> list[Event]:
        batch = stack_windows(refs)  # one call for every due window of every camera
        t0 = time.perf_counter()
        probs = self.classifier.classify(batch, lengths=[ref.frames for ref in refs])
        self.metrics["classify_s"] += time.perf_counter() - t0
        self.metrics["classify_calls"] += 1
        self.metrics["windows"] += len(refs)
        card = self.classifier.card
        events = []
        for ref, p in zip(refs, probs):
            events.extend(self.rules.decide(ref, p, card.labels, card.name))
            top = int(np.argmax(p))
            out.outputs.append(Output(keys.scores_stream(ref.camera), {
                "track_id": ref.track_id, "frame_start": ref.frame_start, "frame_end": ref.frame_end,
                "label": card.labels[top], "score": f"{float(p[top]):.4f}"}, self.settings.skeleton_maxlen))
        self._report()
        return events

    def write(self, outcome: Outcome) -> None:
        """Events first (guarded, idempotent), then outputs, dead letters and acks."""
        if self._write_event is None:
            self._write_event = self.r.register_script(_WRITE_EVENT)
        for event in self.pending_events:
            raw = codec.encode_event(event)
            wrote = self._write_event(
                keys=[keys.event_guard_key(event.id), keys.EVENTS_STREAM],
                args=[EVENT_GUARD_TTL_S, raw, keys.EVENTS_CHANNEL, self.settings.events_maxlen])
            if wrote:
                self.metrics["events"] += 1
                log.info("camera %s track %d: %s %.2f (frames %d-%d) event %s", event.camera,
                         event.track_id, event.label, event.score, event.frame_start,
                         event.frame_end, event.id)
            else:
                self.metrics["duplicates"] += 1
                log.info("camera %s track %d: event %s was already written; not repeated",
                         event.camera, event.track_id, event.id)
        super().write(outcome)
        self.pending_events = []  # kept until written: a lost connection retries them

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

