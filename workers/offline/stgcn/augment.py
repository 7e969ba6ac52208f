"""Augmentation of fall-training windows, and the dataset that feeds them to training.

A window is the action worker's ``(3, T, V, M)`` (x/width - 0.5, y/height - 0.5,
confidence; unseen joints 0) of a ``(width, height)`` frame. :func:`augment_window` works
in pixels around the track's mean position, so a rotation or a mirror is a real one
whatever the frame's aspect, and hands back a window of the same form; the model then
sees it through the card's normalisation (:func:`workers.action.classifier.preprocess`),
exactly as the action worker's windows. Unseen joints stay at 0 throughout.

Augmentations, each drawn per window: mirror (x flipped, left and right joints swapped),
scale, rotation, camera height (the body's vertical extent squashed or stretched, as a
higher or lower camera foreshortens it), translation, speed (the window resampled in time,
0.8-1.25x, its end kept), dropped joints, keypoint noise (relative to the body's size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from workers.action.classifier import preprocess
from workers.offline.stgcn.feeder import ArrayDataset

# OpenPose-18 joint index of each joint's mirror image (right <-> left).
MIRROR = np.array([0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16])


@dataclass(frozen=True)
class AugmentConfig:
    mirror: float = 0.5  # probability
    scale: tuple[float, float] = (0.8, 1.25)
    rotation_deg: float = 15.0  # uniform in +-
    camera_height: tuple[float, float] = (0.8, 1.2)  # vertical factor
    shift: float = 0.1  # translation, uniform in +- this share of the frame
    speed: tuple[float, float] = (0.8, 1.25)
    drop_joint: float = 0.05  # probability per seen joint and frame
    noise: float = 0.01  # keypoint noise sd, share of the body's size


def resample_speed(x: np.ndarray, length: int, factor: float, window: int) -> tuple[np.ndarray, int]:
    """The first ``length`` frames of ``x`` ``(C, T, V, M)`` played ``factor`` times faster,
    at most ``window`` frames kept (the last ones) -> ``(C, window, V, M)`` zero-padded, new length."""
    n = max(1, int(round(length / factor)))
    idx = np.minimum((np.arange(n) * factor).astype(np.int64), length - 1)[-window:]
    out = np.zeros((x.shape[0], window, *x.shape[2:]), dtype=x.dtype)
    out[:, : len(idx)] = x[:, idx]
    return out, len(idx)


def augment_window(x: np.ndarray, length: int, size: tuple[int, int], rng: np.random.Generator,
                   cfg: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, int]:
    """One augmented copy of window ``x`` ``(3, T, V, M)`` with ``length`` valid frames of
    a ``size`` = (width, height) frame -> ``(window (3, T, V, M), length)``."""
    t = x.shape[1]
    x, length = resample_speed(x, length, float(np.exp(rng.uniform(*np.log(cfg.speed)))), t)
    w, h = float(size[0]), float(size[1])
    seen = x[2] > 0  # (T, V, M)
    if not seen.any():
        return x, length
    px = np.stack([(x[0] + 0.5) * w, (x[1] + 0.5) * h]).astype(np.float64)  # (2, T, V, M)
    own = seen[..., 0]
    centre = px[:, :, :, 0][:, own].mean(axis=1) if own.any() else px[:, seen].mean(axis=1)
    rel = px - centre[:, None, None, None]
    if rng.random() < cfg.mirror:
        rel[0] = -rel[0]
        rel, x, seen = rel[:, :, MIRROR], x[:, :, MIRROR], seen[:, MIRROR]
    a = np.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    s = float(np.exp(rng.uniform(*np.log(cfg.scale))))
    k = float(rng.uniform(*cfg.camera_height))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * s
    rel = np.einsum("ij,j...->i...", rot, rel)
    rel[1] *= k
    body = float(np.ptp(rel[:, seen], axis=1).max()) if seen.sum() > 1 else h * 0.1
    rel += rng.normal(0.0, cfg.noise * body, rel.shape)
    shift = rng.uniform(-cfg.shift, cfg.shift, 2) * np.array([w, h])
    px = rel + (centre + shift)[:, None, None, None]
    seen = seen & (rng.random(seen.shape) >= cfg.drop_joint)
    out = np.zeros_like(x)
    out[0] = np.where(seen, px[0] / w - 0.5, 0.0)
    out[1] = np.where(seen, px[1] / h - 0.5, 0.0)
    out[2] = np.where(seen, x[2], 0.0)
    return out.astype(np.float32), length


class WindowDataset(ArrayDataset):
    """Fall-training windows ``data`` ``(N, 3, T, V, M)`` of frames ``sizes`` ``(N, 2)``:
    each sample (augmented when ``augment`` is given) through the card's
    ``normalisation``, as the action worker's classifier preprocesses its windows."""

    def __init__(self, data: np.ndarray, labels: Sequence[int], lengths: Sequence[int],
                 sizes: Sequence[tuple[int, int]], normalisation: str = "body",
                 augment: Optional[AugmentConfig] = None, seed: Optional[int] = None) -> None:
        super().__init__(data, labels, lengths, seed=seed)
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(len(self), 2)
        self.normalisation, self.augment = normalisation, augment

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        x = np.asarray(self.data[i], dtype=np.float32)
        length, size = int(self.lengths[i]), tuple(int(v) for v in self.sizes[i])
        if self.augment is not None:
            x, length = augment_window(x, length, size, self.rng, self.augment)
        x = preprocess(x[None], [length], [size], self.normalisation)[0]
        return x, int(self.labels[i]), length

    def normalised(self) -> ArrayDataset:
        """Every sample normalised, not augmented (for evaluation)."""
        data = preprocess(np.asarray(self.data, dtype=np.float32), self.lengths,
                          [tuple(s) for s in self.sizes], self.normalisation)
        return ArrayDataset(data, self.labels, self.lengths)
