"""Conditions the videos at hand do not show, simulated on their frames (issue 18, item 4).

``actionstream pose detections --condition NAME`` applies one to every frame after the
producer's crop and resize and before its JPEG (where a camera's own noise and darkness
are), so the cached detections say what the pose worker would see. They are simulations, and
the figures made with them say so:

* ``night``: a dark room without the camera's infrared: every pixel at a quarter of its
  brightness, then sensor noise (Gaussian, 6 grey levels), the colour kept;
* ``night-ir``: an infrared night picture: grey, flat (contrast halved around mid-grey) and
  grainy (Gaussian noise, 12 grey levels);
* ``far``: the person twice as far away: the frame shrunk to half its size in the middle of
  a mid-grey frame of the original size;
* ``hidden``: the lower third of the frame behind a flat grey occluder (a sofa, a bed's end),
  so a person on the floor is half hidden or gone.

Each is pure and deterministic: the noise comes from a generator seeded by the frame's seq.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

GREY = 128


def _noise(shape: tuple[int, ...], sigma: float, seq: int) -> np.ndarray:
    return np.random.default_rng(seq).normal(0.0, sigma, shape)


def night(image: np.ndarray, seq: int) -> np.ndarray:
    dark = image.astype(np.float64) * 0.25 + _noise(image.shape, 6.0, seq)
    return np.clip(dark, 0, 255).astype(np.uint8)


def night_ir(image: np.ndarray, seq: int) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    flat = GREY + (grey - GREY) * 0.5 + _noise(grey.shape, 12.0, seq)
    return cv2.cvtColor(np.clip(flat, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def far(image: np.ndarray, seq: int) -> np.ndarray:
    h, w = image.shape[:2]
    out = np.full_like(image, GREY)
    small = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    y, x = (h - h // 2) // 2, (w - w // 2) // 2
    out[y: y + h // 2, x: x + w // 2] = small
    return out


def hidden(image: np.ndarray, seq: int) -> np.ndarray:
    out = image.copy()
    out[image.shape[0] * 2 // 3:] = GREY
    return out


CONDITIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "night": night, "night-ir": night_ir, "far": far, "hidden": hidden}


def apply(name: str, image: np.ndarray, seq: int) -> np.ndarray:
    """``image`` (BGR uint8) under condition ``name`` (:data:`CONDITIONS`)."""
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; known: {', '.join(CONDITIONS)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a condition takes a BGR uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return CONDITIONS[name](image, seq)
