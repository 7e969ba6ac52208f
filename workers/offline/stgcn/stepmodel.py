"""The streaming ST-GCN at runtime: the step graph (``<model>.step.onnx``, written by
``actionstream stgcn streaming``) over onnxruntime, with each track's state kept
here (numpy only; no torch, no Redis).

A track's frames ``(3, V, M)`` (the action worker's window rows) are pushed one at a time;
every :data:`frames_per_step` (4) of them make one step of the graph, batched over every
track whose step is due, and that step's scores are the classifier's probabilities for the
window of the card's T frames ending ``delay_frames`` before the step's last frame (the
network's receptive field reaches that far ahead; see :mod:`workers.offline.stgcn.continual`).

Normalisation: a ``stgcn`` card feeds frames as they come. A ``body`` card's windows are
centred and scaled by statistics of the whole window (:func:`workers.action.classifier.
body_normalise`), which a stream cannot know in advance: :class:`CausalBodyNorm` uses the
same statistics over the track's last T frames up to the current one instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Mapping, Optional, Sequence

import numpy as np

from workers.action.classifier import BODY_CLIP, MIN_BODY, NORMALISATIONS, softmax
from workers.inference.sessions import DEFAULT_PROVIDERS, ModelError, create_session

log = logging.getLogger(__name__)

STEP_CARD_FORMAT = "actionstream-step-card"
STEP_CARD_VERSION = 1


@dataclass(frozen=True)
class StepCard:
    """The step graph's card (``<model>.step.json``)."""

    name: str
    labels: tuple[str, ...]
    window: int
    fps: float
    num_person: int
    normalisation: str
    frames_per_step: int
    delay_frames: int
    positions: int
    state: tuple[tuple[str, tuple[int, ...]], ...]  # (name, per-track shape), in input order


def load_step_card(path: str | os.PathLike) -> StepCard:
    """The card beside a step graph (``x.step.onnx`` -> ``x.step.json``); ValueError if malformed."""
    card_path = Path(path).with_suffix(".json")
    try:
        raw = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"step card {card_path}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != STEP_CARD_FORMAT or \
            raw.get("version") != STEP_CARD_VERSION:
        raise ValueError(f"step card {card_path}: not an {STEP_CARD_FORMAT} version {STEP_CARD_VERSION}")
    try:
        card = StepCard(name=str(raw["name"]), labels=tuple(raw["labels"]), window=int(raw["window"]),
                        fps=float(raw["fps"]), num_person=int(raw["num_person"]),
                        normalisation=str(raw["normalisation"]),
                        frames_per_step=int(raw["frames_per_step"]),
                        delay_frames=int(raw["delay_frames"]), positions=int(raw["positions"]),
                        state=tuple((str(k), tuple(int(d) for d in v)) for k, v in raw["state"].items()))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"step card {card_path}: field {exc} missing or malformed") from None
    if card.normalisation not in NORMALISATIONS:
        raise ValueError(f"step card {card_path}: normalisation {card.normalisation!r} is not supported")
    return card


class StepModel:
    """The step graph: ``run(frames (N, 3, F, V, M), state) -> (scores (N, classes), state)``."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] = DEFAULT_PROVIDERS,
                 threads: int = 0) -> None:
        self.card = load_step_card(path)
        self.path = str(path)
        self.session = create_session(path, providers=providers, threads=threads)
        inputs = self.session.get_inputs()
        want = ["frames", *(f"state.{k}" for k, _ in self.card.state)]
        if [i.name for i in inputs] != want:
            raise ModelError(f"{path}: inputs {[i.name for i in inputs]}, the step card says {want}")
        shape = inputs[0].shape
        self.num_joints = int(shape[3])
        self.frame_shape = (3, self.num_joints, self.card.num_person)
        self._outputs = ["scores", *(f"next.{k}" for k, _ in self.card.state)]

    def initial_state(self, n: int) -> list[np.ndarray]:
        """A zero state for ``n`` tracks (no history)."""
        return [np.zeros((n, *shape), dtype=np.float32) for _, shape in self.card.state]

    def run(self, frames: np.ndarray, state: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One step of ``N`` tracks: raw running-mean logits and the next state. ValueError
        for frames or state of the wrong shape."""
        frames = np.asarray(frames, dtype=np.float32)
        c, v, m = self.frame_shape
        want = (c, self.card.frames_per_step, v, m)
        if frames.ndim != 5 or frames.shape[1:] != want or frames.shape[0] < 1:
            raise ValueError(f"frames must have shape (N, {', '.join(map(str, want))}) with N >= 1; "
                             f"got {frames.shape}")
        n = frames.shape[0]
        if len(state) != len(self.card.state):
            raise ValueError(f"state must be {len(self.card.state)} arrays, got {len(state)}")
        for (name, shape), s in zip(self.card.state, state):
            if s.shape != (n, *shape):
                raise ValueError(f"state {name!r} must have shape {(n, *shape)}, got {s.shape}")
        feeds = dict(zip([i.name for i in self.session.get_inputs()], [frames, *state]))
        scores, *nxt = self.session.run(self._outputs, feeds)
        return scores, nxt


class CausalBodyNorm:
    """The ``body`` normalisation of one track's frames from its last ``window`` frames only:
    centre = mean of slot 0's seen joints over them, scale = the median of their body
    diagonals (floored at :data:`MIN_BODY`), frame heights with x scaled by width/height."""

    def __init__(self, window: int) -> None:
        self._hist: deque = deque(maxlen=window)  # per frame: (sum x, sum y, joints, diag or nan)

    def __call__(self, frame: np.ndarray, size: Optional[tuple[int, int]] = None) -> np.ndarray:
        aspect = 1.0 if size is None else size[0] / size[1]
        seen = frame[2] > 0  # (V, M)
        xy = np.stack([(frame[0].astype(np.float64) + 0.5) * aspect, frame[1].astype(np.float64) + 0.5])
        own = seen[:, 0]
        pts = xy[:, own, 0]
        diag = float(np.hypot(*(pts.max(axis=1) - pts.min(axis=1)))) if own.sum() >= 2 else np.nan
        self._hist.append((pts[0].sum(), pts[1].sum(), int(own.sum()), diag))
        h = np.array(self._hist, dtype=np.float64)
        out = np.array(frame, dtype=np.float32, copy=True)
        if h[:, 2].sum() == 0:  # the track not seen in the window: nothing to centre on
            out[0:2] = 0.0
            return out
        centre = h[:, :2].sum(axis=0) / h[:, 2].sum()
        diags = h[~np.isnan(h[:, 3]), 3]
        scale = max(float(np.median(diags)) if len(diags) else 0.0, MIN_BODY)
        norm = np.clip((xy - centre[:, None, None]) / scale, -BODY_CLIP, BODY_CLIP)
        out[0:2] = np.where(seen[None], norm, 0.0).astype(np.float32)
        return out


class StreamingTracks:
    """Per-track streaming classification over a :class:`StepModel` (pure: no I/O, no clock).

    ``push({track: frame (3, V, M)}, sizes)`` adds one frame per track and returns
    ``{track: probabilities (classes,)}`` for the tracks whose step ran (every
    ``frames_per_step``-th frame of a track), in one batched model call; a track's first
    ``delay_frames`` frames give no scores (no output position has its frames yet). ``drop(track)``
    forgets a track (its next frame starts a new one with no history). ``normalise``: apply the
    card's normalisation (False: the caller's frames are normalised already).
    """

    def __init__(self, model: StepModel, normalise: bool = True) -> None:
        self.model = model
        self.normalise = normalise
        self.delay_steps = model.card.delay_frames // model.card.frames_per_step
        self._pending: dict[Hashable, list[np.ndarray]] = {}
        self._state: dict[Hashable, list[np.ndarray]] = {}
        self._norm: dict[Hashable, CausalBodyNorm] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def drop(self, track: Hashable) -> None:
        for d in (self._pending, self._state, self._norm):
            d.pop(track, None)

    def push(self, frames: Mapping[Hashable, np.ndarray],
             sizes: Optional[Mapping[Hashable, tuple[int, int]]] = None) -> dict[Hashable, np.ndarray]:
        card, due = self.model.card, []
        for track, frame in frames.items():
            frame = np.asarray(frame, dtype=np.float32)
            if frame.shape != self.model.frame_shape:
                raise ValueError(f"track {track!r}: a frame must have shape {self.model.frame_shape}, "
                                 f"got {frame.shape}")
            if self.normalise and card.normalisation == "body":
                norm = self._norm.setdefault(track, CausalBodyNorm(card.window))
                frame = norm(frame, (sizes or {}).get(track))
            pending = self._pending.setdefault(track, [])
            pending.append(frame)
            if len(pending) == card.frames_per_step:
                due.append(track)
        if not due:
            return {}
        batch = np.stack([np.stack(self._pending[t], axis=1) for t in due])  # (N, 3, F, V, M)
        fresh = self.model.initial_state(1)
        states = [self._state.get(t, fresh) for t in due]
        joined = [np.concatenate(parts) for parts in zip(*states)]
        scores, nxt = self.model.run(batch, joined)
        probs = softmax(scores.astype(np.float64))
        out = {}
        for i, track in enumerate(due):
            self._state[track] = [s[i: i + 1] for s in nxt]
            self._pending[track] = []
            if joined[0][i] >= self.delay_steps:  # the step put out a position of the track
                out[track] = probs[i]
        return out
