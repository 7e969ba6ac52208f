"""Draw a run onto its video: skeletons, track ids, each track's current top label, alerts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from producer.sources import crop_and_resize, open_source
from shared.schemas import Event
from shared.settings import Camera
from shared.skeleton import OPENPOSE_18
from workers.exports import CameraRecord, read_spool

log = logging.getLogger(__name__)

ALERT_SECONDS = 2.0


def _colour(track_id: int) -> tuple[int, int, int]:
    hue = (track_id * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def track_text(track_id: int, label: Optional[str] = None, score: Optional[float] = None) -> str:
    """A track's caption as drawn on a view (and shown beside it on the web page):
    ``#1 falling 0.98``, or ``#1`` while it has no label."""
    return f"#{track_id}" if label is None else f"#{track_id} {label} {score:.2f}"


def draw_frame(image: np.ndarray, people, labels: dict[int, tuple[str, float]],
               alerts: list[Event]) -> np.ndarray:
    """Draw on a copy of ``image``; ``labels``: track -> (label, score) in force now."""
    out = image.copy()
    for p in people:
        colour = _colour(p.track_id)
        kp = p.keypoints
        for a, b in OPENPOSE_18.edges:
            if kp[a, 2] > 0 and kp[b, 2] > 0:
                cv2.line(out, tuple(int(v) for v in kp[a, :2]), tuple(int(v) for v in kp[b, :2]),
                         colour, 2, cv2.LINE_AA)
        for x, y, c in kp:
            if c > 0:
                cv2.circle(out, (int(x), int(y)), 3, colour, -1, cv2.LINE_AA)
        x1, y1, x2, y2 = (int(v) for v in p.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1)
        text = track_text(p.track_id, *labels.get(p.track_id, (None, None)))
        cv2.putText(out, text, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                    cv2.LINE_AA)
    for i, event in enumerate(alerts):
        msg = f"ALERT {event.label} track {event.track_id} ({event.score:.2f})"
        cv2.rectangle(out, (0, 18 * i), (out.shape[1], 18 * (i + 1)), (0, 0, 200), -1)
        cv2.putText(out, msg, (4, 18 * i + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def annotate(camera: Camera, width: int, record: CameraRecord, events: list[Event],
             out_path: str | Path, until: Optional[int] = None) -> int:
    """Re-read the camera's (finite) source and write the annotated video; returns frames.
    The skeletons come from the record's spool, read alongside the video (both in seq order).
    ``until``: the last frame to write (a run that was stopped), else the whole source."""
    source = open_source(camera.source, camera.fps)
    writer = None
    current: dict[int, tuple[str, float]] = {}
    alert_frames = int(ALERT_SECONDS * source.fps)
    spooled = read_spool(record.spool) if record.spool is not None else iter(())
    pending = next(spooled, None)
    n = 0
    try:
        for seq, image in enumerate(source.frames()):
            if until is not None and seq > until:
                break
            image = crop_and_resize(image, camera.crop, camera.width or width)
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(str(out_path), fourcc, source.fps,
                                         (image.shape[1], image.shape[0]))
            current.update(record.labels.get(seq, {}))
            while pending is not None and pending[0] < seq:
                pending = next(spooled, None)
            people = pending[3] if pending is not None and pending[0] == seq else ()
            live_ids = {p.track_id for p in people}
            current = {t: v for t, v in current.items() if t in live_ids}
            alerts = [e for e in events if e.frame_end <= seq < e.frame_end + alert_frames]
            writer.write(draw_frame(image, people, current, alerts))
            n += 1
    finally:
        source.close()
        if writer is not None:
            writer.release()
    log.info("camera %s: wrote %d annotated frames to %s", camera.id, n, out_path)
    return n
