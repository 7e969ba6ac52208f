"""Motion gating: run the pose model only on frames where something moves.

Per camera, :class:`MotionGate` looks at a small grey copy of each frame (the JPEG decoded
at 1/8 scale, about half a millisecond) and compares it with a running average of the
frames before it. A pixel has changed when it differs from the average by more than
``pixel_delta`` grey levels *beyond the frame's median difference*, so a light switched
on or the camera's exposure moving shifts every pixel alike and is not motion; a light
blur first takes out JPEG blocking and sensor noise. The frame moves when the changed
pixels outside the masks cover more than ``threshold`` of the frame. Pixels at black or
white are left out: clipped, they cannot follow a change of light as the rest do.

A frame that does not move reuses the camera's last skeletons (the pose worker emits them
under the new frame, tracks and ids unchanged), except that the model still runs at least
every ``keyframe_s`` seconds of the camera's time, so that a person who stops moving (lying
still on the floor after a fall) stays tracked and seen as lying.

Pure: no Redis, no model; time comes with each frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

SCALE_FLAG = cv2.IMREAD_REDUCED_GRAYSCALE_8  # decode at 1/8: 640x480 -> 80x60


@dataclass(frozen=True)
class MotionConfig:
    """``threshold``: the share of the frame that must change; ``pixel_delta``: grey levels
    a pixel must move (beyond the frame's median change); ``keyframe_s``: the longest time
    between two model runs; ``masks``: polygons ``[(x, y), ...]`` in 0..1 of the frame's
    width and height where motion is ignored (a TV, a window with trees); ``alpha``: how
    fast the background follows the frames (0..1 per frame)."""

    threshold: float = 0.002
    pixel_delta: int = 18
    keyframe_s: float = 1.0
    masks: tuple[tuple[tuple[float, float], ...], ...] = ()
    alpha: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"motion threshold must be in [0, 1), got {self.threshold}")
        if not 1 <= self.pixel_delta <= 255:
            raise ValueError(f"motion pixel_delta must be 1..255 grey levels, got {self.pixel_delta}")
        if not self.keyframe_s > 0:
            raise ValueError(f"motion keyframe_s must be > 0 seconds, got {self.keyframe_s}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"motion alpha must be in (0, 1], got {self.alpha}")
        for i, polygon in enumerate(self.masks):
            if len(polygon) < 3 or any(len(p) != 2 or not all(0.0 <= v <= 1.0 for v in p) for p in polygon):
                raise ValueError(f"motion mask {i}: give at least 3 points (x, y), each in 0..1")


def small_grey(jpeg: bytes) -> Optional[np.ndarray]:
    """The JPEG decoded grey at 1/8 scale (uint8 H/8 x W/8), or None when it does not decode."""
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), SCALE_FLAG)
    return image if image is not None and image.size else None


@dataclass
class MotionGate:
    """One camera's gate. :meth:`observe` takes each frame's small grey image and its time
    (seconds) in order and says whether the pose model should run on it."""

    config: MotionConfig = field(default_factory=MotionConfig)
    background: Optional[np.ndarray] = None
    last_run_ts: Optional[float] = None
    _mask: Optional[np.ndarray] = None  # True where motion counts

    def observe(self, grey: Optional[np.ndarray], ts: float, force: bool = False) -> bool:
        """True: run the model (motion, a keyframe is due, the first frame, a size change, or
        ``force``: nothing to reuse yet); False: reuse the last skeletons."""
        if grey is None:
            return True  # the full decode will fail and dead-letter it; never hide a frame
        moved = self.moved(grey)
        last = self.last_run_ts
        due = last is None or ts - last >= self.config.keyframe_s or ts < last  # ts back: a new run
        if moved or due or force:
            self.last_run_ts = ts
            return True
        return False

    def moved(self, grey: np.ndarray) -> bool:
        """Whether ``grey`` moved against the background (and the background then follows it)."""
        frame = cv2.GaussianBlur(grey, (3, 3), 0).astype(np.float32)
        if self.background is None or self.background.shape != frame.shape:
            self.background = frame
            self._mask = self._mask_for(frame.shape)
            return True
        diff = frame - self.background
        diff -= float(np.median(diff))  # the whole frame brighter or darker: not motion
        unclipped = (frame > 8) & (frame < 245)  # a pixel at black or white cannot follow the light
        changed = (np.abs(diff) > self.config.pixel_delta) & unclipped
        if self._mask is not None:
            changed &= self._mask
        cv2.accumulateWeighted(frame, self.background, self.config.alpha)
        return float(changed.mean()) > self.config.threshold

    def _mask_for(self, shape: Sequence[int]) -> Optional[np.ndarray]:
        if not self.config.masks:
            return None
        h, w = shape[:2]
        ignored = np.zeros((h, w), dtype=np.uint8)
        for polygon in self.config.masks:
            points = np.array([[x * (w - 1), y * (h - 1)] for x, y in polygon], dtype=np.int32)
            cv2.fillPoly(ignored, [points], 1)
        return ignored == 0
