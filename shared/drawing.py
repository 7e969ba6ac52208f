"""Drawing people on a frame: skeleton edges, joints, box, track caption, alert banners.

Shared by the annotated video (``up --annotate-out``), the web page's live view and the
history's snapshots; OpenCV and numpy only.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from shared.schemas import Event
from shared.skeleton import OPENPOSE_18


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
