"""Draw a run onto its video: skeletons, track ids, each track's current top label, alerts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import cv2

from producer.sources import crop_and_resize, open_source
from shared.schemas import Event
from shared.settings import Camera
from shared.drawing import draw_frame
from workers.console.exports import CameraRecord, read_spool

log = logging.getLogger(__name__)

ALERT_SECONDS = 2.0


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
