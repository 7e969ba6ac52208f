"""Confirmation of a ``falling`` decision by what the window shows at its end (pure).

A fall ends with the person low or lying; a bend to pick something up, sitting down or a
squat ends with the torso upright again, or the hips still high. And a track that is tiny,
cut by the frame's edge or half hidden gives the model little to go on. So when a rule is
about to raise ``falling`` for a window, :func:`confirm` looks at the track in the window's
last ``tail_s`` seconds (in square pixels, from the window's own data):

* **down**: the torso (mid-hip to mid-shoulder) at least ``down_angle`` degrees from vertical,
  or the box around the seen joints at least ``down_aspect`` times as wide as tall, or the
  hips ``drop`` of the body's height lower than at the window's highest (the person went down
  in the window);
* **quality**: the body at least ``min_body_px`` pixels (its box diagonal), at least
  ``min_joints`` of the 18 joints seen on average.

A window that is not confirmed raises nothing *now*, but keeps the rule's streak: the next
window above the threshold, 0.5 s later, is asked again — a fall still on its way down is
confirmed once the person is on the floor. The figures behind the defaults are in the
README's fall-model section (``actionstream stgcn fall-model --report``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

_SHOULDERS, _HIPS = (2, 5), (8, 11)  # OpenPose-18 r/l shoulder, r/l hip


@dataclass(frozen=True)
class Confirmation:
    """The thresholds of :func:`confirm` (see the module doc); ``enabled`` False: all pass."""

    enabled: bool = True
    tail_s: float = 0.6
    down_angle: float = 60.0
    down_aspect: float = 1.2
    drop: float = 0.35
    min_body_px: float = 0.0  # 60 cut one more false alert in 4.6 h but lost a far-away fall
    min_joints: float = 0.0


def _pixels(data: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A window's slot-0 track as ((T, V, 2) square pixels, (T, V) seen)."""
    w, h = (width, height) if width and height else (1, 1)
    xy = np.stack([(data[0, :, :, 0] + 0.5) * w, (data[1, :, :, 0] + 0.5) * h], axis=-1)
    return xy.astype(np.float64), data[2, :, :, 0] > 0


def _mid(xy: np.ndarray, seen: np.ndarray, joints: tuple[int, int]) -> Optional[np.ndarray]:
    pts = [xy[j] for j in joints if seen[j]]
    return np.mean(pts, axis=0) if pts else None


def features(data: np.ndarray, frames: int, width: int, height: int, fps: float,
             tail_s: float = 0.6) -> dict:
    """What :func:`confirm` reads of a window ``(3, T, V, M)`` (``frames`` valid steps at
    ``fps``): ``angle`` (median torso angle in the tail, degrees, None unseen), ``aspect``
    (median box width / height in the tail), ``drop`` (the hips' fall from the window's highest
    to the tail, in body heights), ``body_px`` (median box diagonal in the tail), ``joints``
    (mean joints seen per present step in the tail)."""
    xy, seen = _pixels(data, width, height)
    xy, seen = xy[:frames], seen[:frames]
    present = np.flatnonzero(seen.sum(axis=1) >= 2)
    if not len(present):
        return {"angle": None, "aspect": None, "drop": 0.0, "body_px": 0.0, "joints": 0.0}
    tail = present[present >= frames - max(1, int(round(tail_s * fps)))]
    tail = tail if len(tail) else present[-1:]
    angles, aspects, diags, hips_y, heights = [], [], [], {}, []
    for t in present:
        pts = xy[t][seen[t]]
        span = pts.max(axis=0) - pts.min(axis=0)
        heights.append(span[1])
        hips = _mid(xy[t], seen[t], _HIPS)
        if hips is not None:
            hips_y[t] = hips[1]
        if t not in tail:
            continue
        diags.append(float(np.hypot(*span)))
        aspects.append(float(span[0] / max(span[1], 1e-6)))
        shoulders = _mid(xy[t], seen[t], _SHOULDERS)
        if shoulders is not None and hips is not None and np.any(shoulders != hips):
            dx, dy = shoulders - hips
            angles.append(math.degrees(math.atan2(abs(dx), -dy)))
    body_h = float(np.max(heights)) if heights else 0.0
    tail_hips = [hips_y[t] for t in tail if t in hips_y]
    drop = ((float(np.median(tail_hips)) - min(hips_y.values())) / body_h
            if tail_hips and body_h > 0 else 0.0)
    return {"angle": float(np.median(angles)) if angles else None,
            "aspect": float(np.median(aspects)), "drop": drop,
            "body_px": float(np.median(diags)), "joints": float(seen[tail].sum(axis=1).mean())}


def confirm(ref, fps: float, cfg: Confirmation = Confirmation()) -> tuple[bool, str]:
    """(confirmed, why) for a window (:class:`~workers.action.window.WindowRef`) about to
    raise ``falling``; see the module doc."""
    if not cfg.enabled:
        return True, "confirmation off"
    f = features(ref.data, ref.frames, ref.width, ref.height, fps, cfg.tail_s)
    if f["body_px"] < cfg.min_body_px:
        return False, f"body {f['body_px']:.0f} px < {cfg.min_body_px:.0f}"
    if f["joints"] < cfg.min_joints:
        return False, f"{f['joints']:.1f} joints seen < {cfg.min_joints:.1f}"
    if f["angle"] is not None and f["angle"] >= cfg.down_angle:
        return True, f"torso {f['angle']:.0f} deg"
    if f["aspect"] is not None and f["aspect"] >= cfg.down_aspect:
        return True, f"box aspect {f['aspect']:.2f}"
    if f["drop"] >= cfg.drop:
        return True, f"hips dropped {f['drop']:.2f} body heights"
    angle = "?" if f["angle"] is None else f"{f['angle']:.0f}"
    return False, (f"still up at the window's end (torso {angle} deg, aspect {f['aspect']:.2f}, "
                   f"hips dropped {f['drop']:.2f})")


def fall_confirmation(fps: float, cfg: Confirmation = Confirmation()):
    """The rules' gate (:class:`~workers.action.rules.Rules` ``confirm``): ``falling`` must be
    confirmed (logged when it is not), other labels pass."""
    def gate(ref, label: str) -> bool:
        if label != "falling":
            return True
        ok, why = confirm(ref, fps, cfg)
        if not ok:
            log.info("camera %s track %d: falling at frame %d not confirmed yet: %s", ref.camera,
                     ref.track_id, ref.frame_end, why)
        return ok

    return gate
