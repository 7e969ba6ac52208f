"""Training data for ST-GCN: the original feeder's augmentations and two datasets.

Augmentations (``feeder/tools.py`` of yysijie/st-gcn, numpy, on one sample
``(C, T, V, M)``): :func:`random_choose` (a random crop of ``size`` frames, or random
zero-padding up to it), :func:`auto_pading`, :func:`random_shift` (the valid frames moved
to a random start), :func:`random_move` (rotation, scale and translation interpolated over
time). ``random_move(keep_missing=True)`` keeps joints with confidence 0 at x = y = 0, as
the action worker's windows have them (the original moves them too).

Datasets yield ``(data (3, T, V, M) float32, label int, length int)``: ``length`` is the
number of valid frames (zero padding follows them). :class:`ArrayDataset` holds in-memory
(or memory-mapped) arrays; :func:`from_gendata` opens the ``*_data.npy`` + ``*_label.pkl``
pair that :func:`workers.offline.stgcn.datasets.gendata` writes.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

ANGLES = (-10.0, -5.0, 0.0, 5.0, 10.0)
SCALES = (0.9, 1.0, 1.1)
SHIFTS = (-0.2, -0.1, 0.0, 0.1, 0.2)


def auto_pading(data: np.ndarray, size: int, random_pad: bool = False,
                rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """``(C, T, V, M)`` zero-padded to ``size`` frames (at a random start if ``random_pad``)."""
    c, t, v, m = data.shape
    if t >= size:
        return data
    begin = int((rng or np.random.default_rng()).integers(0, size - t + 1)) if random_pad else 0
    out = np.zeros((c, size, v, m), dtype=data.dtype)
    out[:, begin:begin + t] = data
    return out


def random_choose(data: np.ndarray, size: int, auto_pad: bool = True,
                  rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """A random ``size``-frame crop of ``(C, T, V, M)``; shorter clips are randomly padded."""
    rng = rng or np.random.default_rng()
    t = data.shape[1]
    if t == size:
        return data
    if t < size:
        return auto_pading(data, size, random_pad=True, rng=rng) if auto_pad else data
    begin = int(rng.integers(0, t - size + 1))
    return data[:, begin:begin + size]


def random_shift(data: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """The valid (non-zero) frames of ``(C, T, V, M)`` moved to a random start."""
    rng = rng or np.random.default_rng()
    out = np.zeros_like(data)
    valid = (data != 0).sum(axis=(0, 2, 3)) > 0
    if not valid.any():
        return out
    begin = int(valid.argmax())
    end = len(valid) - int(valid[::-1].argmax())
    bias = int(rng.integers(0, data.shape[1] - (end - begin) + 1))
    out[:, bias:bias + end - begin] = data[:, begin:end]
    return out


def random_move(data: np.ndarray, angles: Sequence[float] = ANGLES,
                scales: Sequence[float] = SCALES, shifts: Sequence[float] = SHIFTS,
                move_time: int = 1, keep_missing: bool = True,
                rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Rotate, scale and translate x, y of ``(C, T, V, M)`` (a copy), the parameters drawn at
    ``move_time + 1`` nodes and interpolated linearly over time (the original's defaults)."""
    rng = rng or np.random.default_rng()
    c, t, v, m = data.shape
    node = np.append(np.arange(0, t, t / move_time).round().astype(int), t)
    draws = [rng.choice(np.asarray(x, dtype=np.float64), len(node))
             for x in (angles, scales, shifts, shifts)]
    params = np.zeros((4, t))
    for i in range(len(node) - 1):
        for k, d in enumerate(draws):
            params[k, node[i]:node[i + 1]] = np.linspace(d[i], d[i + 1], node[i + 1] - node[i])
    a, s = params[0] * np.pi / 180, params[1]
    theta = np.array([[np.cos(a) * s, -np.sin(a) * s], [np.sin(a) * s, np.cos(a) * s]])  # (2, 2, T)
    xy = data[0:2].reshape(2, t, v * m).astype(np.float64)
    new = np.einsum("ijt,jtk->itk", theta, xy)
    new[0] += params[2][:, None]
    new[1] += params[3][:, None]
    out = data.copy()
    out[0:2] = new.reshape(2, t, v, m)
    if keep_missing and c > 2:
        missing = data[2] == 0
        out[0][missing] = 0
        out[1][missing] = 0
    return out


class ArrayDataset:
    """Samples ``data`` ``(N, 3, T, V, M)`` with ``labels`` ``(N,)`` and valid ``lengths``
    ``(N,)`` (default: T). ``__getitem__`` -> ``(sample (3, T', V, M) float32, label,
    length)``; with ``window_size > 0`` and ``random_choose`` a random crop/pad to it, with
    ``random_shift``/``random_move`` those augmentations (training only)."""

    def __init__(self, data: np.ndarray, labels: Sequence[int],
                 lengths: Optional[Sequence[int]] = None, *, random_choose: bool = False,
                 random_shift: bool = False, random_move: bool = False, window_size: int = -1,
                 seed: Optional[int] = None) -> None:
        self.data = data
        self.labels = np.asarray(labels, dtype=np.int64)
        n, t = data.shape[0], data.shape[2]
        self.lengths = np.full(n, t, np.int64) if lengths is None else np.asarray(lengths, np.int64)
        if len(self.labels) != n or len(self.lengths) != n:
            raise ValueError(f"{n} samples, {len(self.labels)} labels, {len(self.lengths)} lengths")
        self.random_choose, self.random_shift = random_choose, random_shift
        self.random_move, self.window_size = random_move, window_size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        x = np.asarray(self.data[i], dtype=np.float32)
        length = int(self.lengths[i])
        if self.random_shift:
            x = random_shift(x, self.rng)
        if self.random_choose and self.window_size > 0:
            x = random_choose(x, self.window_size, rng=self.rng)
            length = x.shape[1]
        elif self.window_size > 0:
            x = auto_pading(x, self.window_size)[:, : self.window_size]
            length = min(length, self.window_size)
        if self.random_move:
            x = random_move(x, rng=self.rng)
        return x.astype(np.float32, copy=False), int(self.labels[i]), length

    def subset(self, index: Sequence[int], **augment) -> "ArrayDataset":
        """The samples ``index`` (copied into memory), with the given augmentation flags."""
        index = np.asarray(index, dtype=np.int64)
        return ArrayDataset(np.asarray(self.data[index]), self.labels[index],
                            self.lengths[index], **augment)


def from_gendata(data_path: str | os.PathLike, label_path: str | os.PathLike,
                 **augment) -> ArrayDataset:
    """An :class:`ArrayDataset` over a gendata pair (the data stays memory-mapped)."""
    from workers.offline.stgcn.datasets import load_gendata

    data, labels, _ = load_gendata(data_path, label_path)
    return ArrayDataset(data, labels, **augment)


def batches(dataset: ArrayDataset, batch_size: int, shuffle: bool = True,
            rng: Optional[np.random.Generator] = None,
            bucket: int = 4) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Mini-batches ``(x (B, 3, T, V, M), labels (B,), lengths (B,))`` with every sample of a
    batch in one T bucket (its length rounded up to ``bucket``), so the zero padding a
    sample gets is the padding the action worker gives it. The last, short batch is kept
    (no drop_last: a tiny dataset still trains)."""
    rng = rng or np.random.default_rng()
    samples = [dataset[i] for i in (rng.permutation(len(dataset)) if shuffle
                                    else range(len(dataset)))]
    groups: dict[int, list[int]] = {}
    for k, (_, _, length) in enumerate(samples):
        groups.setdefault(-(-max(length, 1) // bucket) * bucket, []).append(k)
    chunks = [(t, ks[i:i + batch_size]) for t, ks in groups.items()
              for i in range(0, len(ks), batch_size)]
    if shuffle:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    for t, ks in chunks:
        c, _, v, m = samples[ks[0]][0].shape
        x = np.zeros((len(ks), c, t, v, m), dtype=np.float32)
        for j, k in enumerate(ks):
            data, _, length = samples[k]
            n = min(t, data.shape[1])
            x[j, :, :n] = data[:, :n]
        yield x, np.array([samples[k][1] for k in ks]), np.array([min(samples[k][2], t) for k in ks])
