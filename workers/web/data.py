"""What the page shows, read from Redis (and from the event history when there is one).

Each camera's view is its newest posed frame: the pose worker keeps the last frames with
their tracked skeletons in ``keys.recent_frames_stream`` (for snapshots); where that
stream is empty (``ACTIONSTREAM_SNAPSHOT_FRAMES=0``) the newest entry of the frames stream
is drawn with the newest skeletons entry when the two are close enough. Ages are measured
on the Redis server's clock from entry ids, as everywhere else.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from shared import codec, keys
from shared.codec import DecodeError
from shared.ops import status
from shared.redisio import registered_cameras, registration, text
from shared.schemas import EndOfStream, Event, Frame, Skeletons
from shared.settings import Settings
from workers.web import view

log = logging.getLogger(__name__)

SCORES_READ = 64  # newest score entries looked at for a camera's current labels
EVENTS_READ = 200  # newest events looked at for a camera's alert banner
STREAM_PAGE = 500
STREAM_SCAN = 5000  # events of the Redis stream scanned at most for one query
STORE_RETRY_S = 5.0
REPLAYS_SHOWN = 50  # newest replay jobs listed on the page


def _entry_ms(entry_id) -> int:
    return int(text(entry_id).split("-", 1)[0])


def _decode_event(fields) -> Optional[Event]:
    try:
        return codec.decode_event(fields.get(b"event", b""))
    except DecodeError:
        return None


class PageData:
    """The reads behind the page's routes. ``r``: a Redis client (bytes, not decoded)."""

    def __init__(self, settings: Settings, r, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.r = r
        self.clock = clock
        self._store = None
        self._store_retry_at = 0.0
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- event history

    def store(self):
        """The event history (``workers.history``) once it exists, else None; looked for
        again every few seconds, so a history started after the page is found."""
        with self._lock:
            if self._store is None and time.monotonic() >= self._store_retry_at:
                self._store_retry_at = time.monotonic() + STORE_RETRY_S
                self._store = self._open_store()
            return self._store

    def _open_store(self):
        try:
            from workers.history.store import EventStore, HistoryError, store_exists
        except ImportError:  # an install without the history
            return None
        try:
            return EventStore.from_settings(self.settings) if store_exists(self.settings) else None
        except HistoryError as exc:
            log.warning("web: event history not readable (%s); showing the Redis events only", exc)
            return None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def snapshot_path(self, event_id: str) -> Optional[Path]:
        store = self.store()
        return store.snapshot_path(event_id) if store is not None else None

    def snapshot_url(self, event_id: str) -> Optional[str]:
        return f"/snapshots/{event_id}.jpg" if self.snapshot_path(event_id) is not None else None

    # ---------------------------------------------------------------- events

    def stream_events(self, since: Optional[float] = None, camera: Optional[str] = None,
                      label: Optional[str] = None, limit: int = 100) -> list[Event]:
        """The newest matching events of the Redis events stream, newest first."""
        out: list[Event] = []
        end, scanned = "+", 0
        while len(out) < limit and scanned < STREAM_SCAN:
            entries = self.r.xrevrange(keys.EVENTS_STREAM, max=end, min="-", count=STREAM_PAGE)
            for _, fields in entries:
                event = _decode_event(fields)
                if event is not None and view.matches(codec.event_to_dict(event), since, camera, label):
                    out.append(event)
            scanned += len(entries)
            if len(entries) < STREAM_PAGE:
                break
            end = "(" + text(entries[-1][0])
        return out[:limit]

    def events(self, since: Optional[float] = None, camera: Optional[str] = None,
               label: Optional[str] = None, limit: int = 100) -> list[dict]:
        """Events of the history and of the Redis stream, newest first, with snapshot URLs."""
        store = self.store()
        stored = store.query(since=since, camera=camera, label=label, limit=limit) if store else []
        known = {row["id"] for row in stored if row.get("snapshot")}
        streamed = [view.event_row(e, None if e.id in known else self.snapshot_url(e.id))
                    for e in self.stream_events(since, camera, label, limit)]
        return view.merge_events(stored, streamed, limit)

    def event_row(self, event: Event) -> dict:
        return view.event_row(event, self.snapshot_url(event.id))

    # ---------------------------------------------------------------- cameras

    def _describe(self, camera: str) -> dict:
        return registration(self.r, camera)

    def _posed(self, camera: str) -> Optional[tuple[str, Skeletons, bytes]]:
        """(entry id, skeletons, JPEG) of the newest recent frame, or None."""
        for entry_id, fields in self.r.xrevrange(keys.recent_frames_stream(camera), count=1):
            try:
                skel = codec.decode_skeletons(fields)
            except DecodeError:
                return None
            jpeg = fields.get(b"jpeg")
            if isinstance(skel, Skeletons) and isinstance(jpeg, bytes):
                return text(entry_id), skel, jpeg
        return None

    def _newest(self, stream: str, decode, kind) -> tuple[Optional[str], Optional[object]]:
        for entry_id, fields in self.r.xrevrange(stream, count=4):
            try:
                msg = decode(fields)
            except DecodeError:
                continue
            if isinstance(msg, kind) and not isinstance(msg, EndOfStream):
                return text(entry_id), msg
        return None, None

    def latest(self, camera: str) -> Optional[tuple[str, Frame, tuple]]:
        """(entry id, frame, people) of the camera's newest view, or None when it has none."""
        posed = self._posed(camera)
        if posed is not None:
            entry_id, skel, jpeg = posed
            return entry_id, Frame(camera, skel.seq, skel.ts, skel.width, skel.height, jpeg), skel.people
        frame_id, frame = self._newest(keys.frames_stream(camera), codec.decode_frame, Frame)
        if frame is None:
            return None
        _, skel = self._newest(keys.skeletons_stream(camera), codec.decode_skeletons, Skeletons)
        return frame_id, frame, view.people_for(frame, skel)

    def _scores(self, camera: str) -> list[view.Score]:
        entries = self.r.xrevrange(keys.scores_stream(camera), count=SCORES_READ)
        found = (view.parse_score(f) for _, f in entries)
        return [s for s in found if s is not None]

    def _camera_events(self, camera: str) -> list[Event]:
        found = (_decode_event(f) for _, f in self.r.xrevrange(keys.EVENTS_STREAM, count=EVENTS_READ))
        return [e for e in found if e is not None and e.camera == camera]

    def current(self, camera: str) -> Optional[tuple[str, Frame, tuple, dict[int, tuple[str, float]]]]:
        """(entry id, frame, people, track -> (label, score)) of the camera's newest view, or
        None: what its drawn view and its labels on the page both come from."""
        latest = self.latest(camera)
        if latest is None:
            return None
        entry_id, frame, people = latest
        labels = view.current_labels(self._scores(camera), [p.track_id for p in people], frame.seq)
        return entry_id, frame, people, labels

    def view(self, camera: str) -> Optional[tuple[bytes, dict]]:
        """The camera's newest view drawn (skeletons, ids, labels, alert banner) as JPEG, with
        what is drawn on it (:func:`view.view_meta`: seq, people, labels); None when the camera
        has no frame (or an unreadable one)."""
        keys.check_camera_id(camera)
        current = self.current(camera)
        if current is None:
            return None
        _, frame, people, labels = current
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("camera %s: frame %d cannot be decoded; no view", camera, frame.seq)
            return None
        fps = float(self._describe(camera).get("fps") or 0)
        alerts = view.alerts_at(self._camera_events(camera), camera, frame.seq, fps)
        return view.render_view(image, people, labels, alerts), view.view_meta(frame.seq, people, labels)

    def view_jpeg(self, camera: str) -> Optional[bytes]:
        drawn = self.view(camera)
        return drawn[0] if drawn is not None else None

    def server_ms(self) -> int:
        secs, micros = self.r.time()
        return int(secs) * 1000 + int(micros) // 1000

    def cameras(self) -> list[dict]:
        """Every registered camera: its description, newest frame (seq, age on the Redis
        clock, people) and current labels, and the URL of its view."""
        now_ms = self.server_ms()
        out = []
        for cam in registered_cameras(self.r):
            desc = self._describe(cam)
            row = {"id": cam, "source": desc.get("source"), "mode": desc.get("mode"),
                   "fps": desc.get("fps"), "frames": desc.get("frames"),
                   "view": f"/api/cameras/{cam}/view.jpg", "seq": None, "age_s": None,
                   "people": 0, "labels": {}}
            current = self.current(cam)
            if current is not None:
                entry_id, frame, people, labels = current
                row.update(view.view_meta(frame.seq, people, labels),
                           age_s=round(max(0, now_ms - _entry_ms(entry_id)) / 1000, 2))
            out.append(row)
        return out

    # ---------------------------------------------------------------- health, replays

    def health(self) -> dict:
        """Workers' heartbeats and the streams' lengths and lags, as ``actionstream status``
        shows them, with heartbeat ages and an overall ``ok``."""
        return view.health_summary(status(self.r), self.clock())

    def replay_jobs(self, limit: int = REPLAYS_SHOWN) -> list[dict]:
        """The replay jobs of the jobs registry (``workers.jobs.registry``), newest first, at
        most ``limit``: id, the replay camera, the camera or video replayed, state (and why,
        for a failed or cancelled one), items published out of the total and ``progress``
        (0..1, None while the total is unknown), events (once done), created and updated."""
        from workers.jobs import registry
        from workers.jobs.replay import Checkpoint, ReplayError

        try:
            jobs = registry.jobs(self.r)
        except (ReplayError, ValueError, TypeError) as exc:  # an entry that is no job spec
            log.warning("web: replay jobs not readable (%s)", exc)
            return []
        rows = []
        for spec, state in reversed(jobs[-limit:]):
            ckpt = Checkpoint.from_hash(self.r.hgetall(keys.job_checkpoint_key(spec.replay_camera)))
            rows.append(view.replay_row(spec, state, ckpt.published))
        return rows
