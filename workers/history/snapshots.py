"""Event snapshots: the frame that raised an event, with the skeletons and the label drawn.

Frames leave the frames stream soon after the pose stage has read them, so the pose
worker also keeps each camera's last ``snapshot_frames`` posed frames, with their
tracked skeletons, in ``keys.recent_frames_stream(camera)`` (written in the same fenced
script as the skeletons, capped with ``MAXLEN ~``). :func:`find_frame` looks an event's
``frame_end`` up there, newest first; :func:`render` (pure) draws and encodes it.
"""

from __future__ import annotations

import logging
from typing import Optional

import cv2
import numpy as np

from shared import codec, keys
from shared.codec import DecodeError
from shared.errors import ActionstreamError
from shared.schemas import Event, Skeletons
from shared.redisio import text
from shared.drawing import draw_frame

log = logging.getLogger(__name__)

PAGE = 16  # entries per XREVRANGE while walking back
SNAPSHOT_QUALITY = 85


class SnapshotMissing(ActionstreamError, LookupError):
    """The event's frame is no longer (or not) among the camera's recent frames."""


def find_frame(r, camera: str, seq: int, page: int = PAGE) -> tuple[Skeletons, bytes]:
    """The skeletons and JPEG of frame ``seq`` of ``camera`` from its recent-frames stream,
    walking back from the newest entry; :class:`SnapshotMissing` when it is not there."""
    stream = keys.recent_frames_stream(camera)
    end = "+"
    while True:
        entries = r.xrevrange(stream, max=end, min="-", count=page)
        for entry_id, fields in entries:
            try:
                got = int(text(fields.get(b"seq", b"-1")))
            except ValueError:
                continue
            if got == seq:
                return _decode(fields, camera, seq)
            if got < seq:  # older than the frame: it was never kept (a stale frame skipped)
                raise SnapshotMissing(f"camera {camera}: frame {seq} is not among the recent frames")
        if len(entries) < page:
            oldest = text(entries[-1][0]) if entries else "none"
            raise SnapshotMissing(f"camera {camera}: frame {seq} is older than the recent frames kept "
                                  f"(oldest entry {oldest}; raise ACTIONSTREAM_SNAPSHOT_FRAMES)")
        end = "(" + text(entries[-1][0])


def _decode(fields: dict, camera: str, seq: int) -> tuple[Skeletons, bytes]:
    try:
        skel = codec.decode_skeletons(fields)
    except DecodeError as exc:
        raise SnapshotMissing(f"camera {camera}: frame {seq} is unreadable: {exc}") from None
    jpeg = fields.get(b"jpeg")
    if not isinstance(skel, Skeletons) or not isinstance(jpeg, bytes):
        raise SnapshotMissing(f"camera {camera}: frame {seq} holds no JPEG")
    return skel, jpeg


def render(jpeg: bytes, skeletons: Skeletons, event: Event, quality: int = SNAPSHOT_QUALITY) -> bytes:
    """The snapshot JPEG: the frame with every skeleton, the event's track labelled and the
    alert banner; ValueError when the frame cannot be decoded."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"camera {event.camera}: frame {event.frame_end} JPEG cannot be decoded")
    labels = {event.track_id: (event.label, event.score)}
    drawn = draw_frame(image, skeletons.people, labels, [event])
    ok, buf = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"camera {event.camera}: snapshot could not be encoded")
    return buf.tobytes()


def snapshot_for(r, event: Event) -> Optional[bytes]:
    """The event's snapshot, or None (logged) when its frame is not at hand."""
    try:
        skel, jpeg = find_frame(r, event.camera, event.frame_end)
        return render(jpeg, skel, event)
    except (SnapshotMissing, ValueError) as exc:
        log.warning("camera %s track %d: event %s stored without a snapshot: %s", event.camera,
                    event.track_id, event.id, exc)
        return None
