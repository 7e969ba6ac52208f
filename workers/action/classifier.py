"""ST-GCN action classifier over onnxruntime: windows ``(N, 3, T, V, M)`` in, label
probabilities ``(N, classes)`` out.

The model's per-position ``scores`` output ``(N, classes, T/4, V, M)`` (the original's
``extract_feature``) is averaged over V, M and the *voted* positions — those that cover
valid frames, or only the last ``card.vote_last`` of them — so zero padding never votes;
a softmax of that average gives the probabilities. The average (not the sum the original
demo's arg-max uses) keeps the arg-max and makes the softmax equal to the model's own
``softmax(logits)`` for an unpadded window, i.e. the probabilities the model was trained
to produce; a sum over ~2700 positions would saturate the softmax to 0/1.

T bucketing (dynamic-T models): a window of L frames runs at the smallest bucket
``>= L`` (default: L rounded up to a multiple of 4, i.e. no extra padding), one model call
per bucket. The padding a window gets depends on its own length only, never on the other
windows of the batch, so its score is reproducible (a redelivered window scores the same).
Zero padding inside the model does reach the last valid positions through the temporal
convolutions (the input BatchNorm makes zeros non-zero), so a coarser bucket would shift a
short window's scores slightly; a fixed-T model always pads to the card's window, as the
original did. ``DEFAULT_BUCKET`` gives the measurement behind the default.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np

from shared.skeleton import get_layout
from workers.action.card import CardError, ModelCard, load_card
from workers.action.window import CHANNELS, T_MULTIPLE, round_up
from workers.inference.sessions import DEFAULT_PROVIDERS, ModelError, create_session

log = logging.getLogger(__name__)

SCORES_OUTPUT = "scores"
# Bucket step for dynamic-T models: 4 = exact (L rounded up to a multiple of 4).
# Measured on the exported ST-GCN, onnxruntime CPU, 2 threads (a shared 2-core machine, so
# +-30 %): cost is linear in N*T, ~0.5 ms per window-frame (1.7 ms under heavy load), and a
# call's fixed cost is ~2-4 ms, i.e. worth a few frames of padding. A batch of 8 full and 8
# young windows (32..137 frames): exact buckets 9 calls / 3088 frames, 1.56 s; buckets of
# 64: 4 calls / 3296 frames, no faster within the noise; all padded to 300: 1 call / 4800
# frames, 2.76 s. Coarser buckets pay off only where calls are expensive (a GPU): tune it.
DEFAULT_BUCKET = 4
# Window normalisations a card may name (field ``normalisation``):
# "stgcn": the windows as they come (x/width - 0.5, y/height - 0.5, confidence), i.e. frame
#   coordinates: the model sees where in the picture, and how big, the person is;
# "body": each window brought back to square pixels (x scaled by width/height), then centred
#   on its track's mean joint position over the window and divided by the track's body size
#   (median over the window of the diagonal of the box around its seen joints), so a room,
#   a camera's distance, framing or aspect cannot be learnt; motion within the window stays.
NORMALISATIONS = ("stgcn", "body")
BODY_CLIP = 6.0  # body units; far-away other people are clipped to this
MIN_BODY = 0.02  # body size floor, in frame heights (one or two joints seen)


class ActionClassifier:
    """An ST-GCN ONNX model and its card, checked against each other at load.

    ``layout``: the skeleton layout the caller feeds (the pipeline's windows are OpenPose-18);
    a card naming another layout is refused. ``bucket``: T granularity for dynamic-T models
    (a multiple of 4). Raises :class:`CardError` (card missing or malformed) or
    :class:`ModelError` (model missing, unloadable or not matching the card).
    """

    def __init__(self, model_path: str | os.PathLike, providers: Sequence[str] = DEFAULT_PROVIDERS,
                 threads: int = 0, layout: Optional[str] = "openpose",
                 bucket: int = DEFAULT_BUCKET) -> None:
        if bucket < T_MULTIPLE or bucket % T_MULTIPLE:
            raise ValueError(f"bucket ({bucket}) must be a positive multiple of {T_MULTIPLE}")
        self.card: ModelCard = load_card(model_path)
        self.path = str(model_path)
        self.bucket = bucket
        try:
            self.num_joints = get_layout(self.card.layout).num_joints
        except ValueError as exc:
            raise CardError(f"model card of {model_path}: field 'layout': {exc}") from None
        if layout is not None and self.card.layout != layout:
            raise ModelError(f"{model_path}: card layout {self.card.layout!r}, but the windows "
                             f"fed to it are {layout!r}")
        if self.card.normalisation not in NORMALISATIONS:
            raise ModelError(f"{model_path}: card normalisation {self.card.normalisation!r} is not "
                             f"supported (one of {', '.join(NORMALISATIONS)})")
        self.session = create_session(model_path, providers=providers, threads=threads)
        self._check_io()
        self._probe()
        log.info("action model %s: %d labels, layout %s, T %s, M %d, vote_last %d",
                 self.card.name, len(self.card.labels), self.card.layout,
                 "dynamic" if self.card.dynamic_t else self.card.window,
                 self.card.num_person, self.card.vote_last)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    # -- load-time checks ------------------------------------------------------------------
    def _check_io(self) -> None:
        """The model's input is (N, 3, T, V, M) float as the card says, and it has ``scores``."""
        card, where = self.card, self.path
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        if len(inputs) != 1 or names[0] != card.input_name:
            raise ModelError(f"{where}: expected one input named {card.input_name!r} (card "
                             f"field 'input_name'), the model has {names}")
        inp = inputs[0]
        if inp.type != "tensor(float)":
            raise ModelError(f"{where}: input {inp.name!r} is {inp.type}, expected tensor(float)")
        shape = list(inp.shape)
        if len(shape) != 5:
            raise ModelError(f"{where}: input {inp.name!r} has shape {shape}; an ST-GCN input is "
                             "(N, 3, T, V, M)")
        expect = {1: ("channels", CHANNELS), 3: (f"V (layout {card.layout})", self.num_joints),
                  4: ("M (card num_person)", card.num_person)}
        for axis, (what, want) in expect.items():
            if isinstance(shape[axis], int) and shape[axis] != want:
                raise ModelError(f"{where}: input {inp.name!r} has shape {shape}: {what} is "
                                 f"{shape[axis]}, expected {want}")
        t = shape[2]
        if isinstance(t, int) and card.dynamic_t:
            raise ModelError(f"{where}: card says dynamic_t, but the model's T is fixed at {t}")
        if isinstance(t, int) and t != card.window:
            raise ModelError(f"{where}: the model's T is {t}, the card's window {card.window}")
        outputs = [o.name for o in self.session.get_outputs()]
        if SCORES_OUTPUT not in outputs or SCORES_OUTPUT not in card.outputs:
            raise ModelError(f"{where}: output {SCORES_OUTPUT!r} (per-position class scores) is "
                             f"needed in the model (has {outputs}) and the card (lists "
                             f"{list(card.outputs)})")

    def _probe(self) -> None:
        """One zero window at the card's T: the scores come out (1, classes, T/4, V, M)."""
        t = self.card.window
        x = np.zeros((1, CHANNELS, t, self.num_joints, self.card.num_person), dtype=np.float32)
        try:
            scores = self._run(x)
        except Exception as exc:  # onnxruntime's own exception types are private
            raise ModelError(f"{self.path}: a zero window {x.shape} does not run: {exc}") from exc
        want = (1, len(self.card.labels), t // T_MULTIPLE, self.num_joints, self.card.num_person)
        if scores.shape != want:
            raise ModelError(f"{self.path}: output {SCORES_OUTPUT!r} has shape {scores.shape} for "
                             f"input {x.shape}, expected {want} ({len(self.card.labels)} labels "
                             "in the card)")

    def _run(self, x: np.ndarray) -> np.ndarray:
        (scores,) = self.session.run([SCORES_OUTPUT], {self.card.input_name: x})
        return scores

    # -- classification ----------------------------------------------------------------------
    def t_for(self, frames: int) -> int:
        """The T a window of ``frames`` valid frames runs at."""
        if not self.card.dynamic_t:
            return self.card.window
        return min(round_up(frames, self.bucket), round_up(max(frames, self.card.window)))

    def classify(self, batch: np.ndarray, lengths: Optional[Sequence[int]] = None,
                 sizes: Optional[Sequence[tuple[int, int]]] = None) -> np.ndarray:
        """Label probabilities float32 ``(N, classes)`` for windows ``(N, 3, T, V, M)``.

        ``lengths``: each row's valid frames (zero padding follows them); None infers them
        as the rows' last non-zero frame. ``sizes``: each row's frame (width, height), for
        the card's ``body`` normalisation (None: square frames); ignored by ``stgcn``
        cards. One model call per T bucket (a fixed-T model: one call, every row padded to
        the card's window).
        """
        batch = self._check_batch(batch)
        lengths = self._lengths(batch, lengths)
        batch = preprocess(batch, lengths, sizes, self.card.normalisation)
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            groups.setdefault(self.t_for(int(n)), []).append(i)
        probs = np.empty((batch.shape[0], len(self.card.labels)), dtype=np.float32)
        for t, rows in groups.items():
            x = _fit_t(batch[rows], t)
            scores = self._run(np.ascontiguousarray(x))
            probs[rows] = softmax(vote(scores, lengths[rows], self.card.vote_last))
        return probs

    def predict(self, batch: np.ndarray, lengths: Optional[Sequence[int]] = None,
                sizes: Optional[Sequence[tuple[int, int]]] = None) -> tuple[np.ndarray, list[str]]:
        """:meth:`classify`, plus each row's arg-max label."""
        probs = self.classify(batch, lengths, sizes)
        return probs, [self.card.labels[int(i)] for i in probs.argmax(axis=1)]

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        """The batch as the model takes it; windows with more person slots than the card's
        M keep the first M (slot 0 is the track itself, then the nearest others)."""
        batch = np.asarray(batch, dtype=np.float32)
        want = (CHANNELS, self.num_joints, self.card.num_person)
        if batch.ndim == 5 and batch.shape[4] > want[2]:
            batch = batch[..., : want[2]]
        if batch.ndim != 5 or (batch.shape[1], batch.shape[3], batch.shape[4]) != want or \
                batch.shape[0] == 0 or batch.shape[2] == 0:
            raise ValueError(f"windows must have shape (N, {want[0]}, T, {want[1]}, {want[2]}) "
                             f"with N, T >= 1; got {batch.shape}")
        if not self.card.dynamic_t and batch.shape[2] > self.card.window:
            raise ValueError(f"windows of {batch.shape[2]} frames exceed the model's fixed "
                             f"T {self.card.window}")
        return batch

    @staticmethod
    def _lengths(batch: np.ndarray, lengths: Optional[Sequence[int]]) -> np.ndarray:
        t = batch.shape[2]
        if lengths is None:
            nonzero = np.abs(batch).max(axis=(1, 3, 4)) > 0  # (N, T)
            last = t - np.argmax(nonzero[:, ::-1], axis=1)
            return np.where(nonzero.any(axis=1), last, t).astype(np.int64)
        out = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if out.shape[0] != batch.shape[0] or (out < 1).any() or (out > t).any():
            raise ValueError(f"lengths must be N={batch.shape[0]} values in 1..{t}, "
                             f"got {out.tolist()}")
        return out


def _fit_t(x: np.ndarray, t: int) -> np.ndarray:
    """``(n, C, T0, V, M)`` cut or zero-padded at the end to T = ``t``."""
    if x.shape[2] >= t:
        return x[:, :, :t]
    return np.pad(x, ((0, 0), (0, 0), (0, t - x.shape[2]), (0, 0), (0, 0)))


def voted_positions(frames: int, positions: int, vote_last: int = 0) -> slice:
    """The output positions (of ``positions`` = T/4) that vote for a window of ``frames``
    valid frames: those covering a valid frame, or only the last ``vote_last`` of them."""
    end = min(positions, -(-int(frames) // T_MULTIPLE))
    start = max(0, end - vote_last) if vote_last > 0 else 0
    return slice(start, end)


def vote(scores: np.ndarray, lengths: np.ndarray, vote_last: int = 0) -> np.ndarray:
    """Per-window logits ``(n, classes)``: ``scores`` ``(n, classes, T', V, M)`` averaged over
    V, M and each window's voted positions."""
    per_t = scores.mean(axis=(3, 4), dtype=np.float64)  # (n, classes, T')
    out = np.empty(per_t.shape[:2], dtype=np.float64)
    for i, n in enumerate(lengths):
        out[i] = per_t[i, :, voted_positions(int(n), per_t.shape[2], vote_last)].mean(axis=1)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, float32 ``(n, classes)``."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


# -- normalisation -------------------------------------------------------------------------
def preprocess(batch: np.ndarray, lengths: Optional[Sequence[int]], sizes, normalisation: str) -> np.ndarray:
    """Windows ``(N, 3, T, V, M)`` (the action worker's form) as the card's ``normalisation``
    wants them: ``stgcn`` unchanged, ``body`` :func:`body_normalise`."""
    if normalisation == "stgcn":
        return batch
    if normalisation == "body":
        return body_normalise(batch, lengths, sizes)
    raise ValueError(f"unknown normalisation {normalisation!r} (one of {', '.join(NORMALISATIONS)})")


def body_normalise(batch: np.ndarray, lengths: Optional[Sequence[int]] = None,
                   sizes: Optional[Sequence[tuple[int, int]]] = None) -> np.ndarray:
    """A body-normalised copy of windows ``(N, 3, T, V, M)``: per row, x, y of every seen
    joint (confidence > 0) of every slot -> (p - c) / s, where p is in frame heights (x
    times width/height, from ``sizes``; None: square), c the mean of slot 0's seen joints
    over the row's first ``lengths`` frames, s slot 0's body size (:data:`NORMALISATIONS`),
    clipped to +-:data:`BODY_CLIP`. Unseen joints and padding stay 0; confidence is kept."""
    x = np.array(batch, dtype=np.float32, copy=True)
    n, _, t = x.shape[:3]
    lengths = np.full(n, t) if lengths is None else np.asarray(lengths).reshape(-1)
    aspect = np.ones(n) if sizes is None else np.array([w / h for w, h in sizes], dtype=np.float64)
    if aspect.shape != (n,) or not (aspect > 0).all():
        raise ValueError(f"sizes must be N={n} positive (width, height) pairs")
    for i in range(n):
        x[i] = _body_row(x[i], int(lengths[i]), float(aspect[i]))
    return x


def _body_row(w: np.ndarray, length: int, aspect: float) -> np.ndarray:
    """One window ``(3, T, V, M)``, see :func:`body_normalise`."""
    seen = w[2] > 0  # (T, V, M)
    seen[length:] = False
    xy = np.stack([(w[0].astype(np.float64) + 0.5) * aspect, w[1].astype(np.float64) + 0.5])
    own = seen[:, :, 0]
    if not own.any():  # no track in the window: nothing to centre on
        w[0:2] = 0.0
        return w
    centre = xy[:, :, :, 0][:, own].mean(axis=1)  # (2,)
    diag = []
    for f in np.flatnonzero(own.sum(axis=1) >= 2):
        pts = xy[:, f, own[f], 0]
        diag.append(float(np.hypot(*(pts.max(axis=1) - pts.min(axis=1)))))
    scale = max(float(np.median(diag)) if diag else 0.0, MIN_BODY)
    out = np.clip((xy - centre[:, None, None, None]) / scale, -BODY_CLIP, BODY_CLIP)
    w[0:2] = np.where(seen[None], out, 0.0).astype(np.float32)
    return w
