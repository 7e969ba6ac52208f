"""The fall model: training windows from actionstream's own skeletons, cross-validation
that simulates the action worker and its rules, the final model.

Clips come from the pose stage's cached detections, tracked as the pose worker tracks
(:mod:`workers.offline.stgcn.fallsources`), or from ``actionstream up --skeletons-out`` exports
(:func:`workers.offline.stgcn.fallsources.load_export_clips`). Each clip is replayed through
:class:`workers.action.window.CameraWindows`
exactly as the action worker does (the card's fps time grid, slot filling, gaps), so the
training windows are the windows the model will see; the classifier's own preprocessing
(the card's ``normalisation``, :func:`workers.action.classifier.preprocess`) is applied to
them in training and evaluation alike. Training uses a finer stride than the worker (more
windows per clip) and augments them (:mod:`workers.offline.stgcn.augment`); evaluation uses
the worker's stride and rules (:mod:`workers.offline.stgcn.accuracy`).

Fall intervals (seqs, 0-based), see :func:`workers.offline.stgcn.fallsources.label_clip`: URFD
from its per-frame labels (the frames labelled 0), NTU A043 from the track's descent
(:func:`estimate_fall`), UP-Fall derived from the skeletons
(:func:`workers.offline.stgcn.upfall.derive_fall`); every other clip is a negative.

Window labels (:func:`window_label`): ``falling`` when the window holds at least half
(``fall_share``) of the fall with the track present in it; ``lying`` when it starts after the fall ended;
``upright`` when it ends before the fall began; else ambiguous (not trained on).
With ``classes = ("not-falling", "falling")`` upright and lying merge (the shipped model).
"""

from __future__ import annotations

import csv
import inspect
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from workers.offline.stgcn import accuracy as metrics
from shared.kinetics import EXPORT_SCALE
from workers.action.window import CameraWindows, WindowRef

log = logging.getLogger(__name__)

UPRIGHT, FALLING, LYING, IGNORE = 0, 1, 2, -1
CLASSES_3 = ("upright", "falling", "lying")
CLASSES_2 = ("not-falling", "falling")
FPS_OVERRIDE = {"walking": 10.0}  # the walking video is 10 fps; the rest 30
NTU_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


@dataclass
class Clip:
    """One camera's frames: ``frames`` the Skeletons in seq order; ``fall`` the (first, last)
    seq of the fall or None; ``kind`` fall | negative; ``dataset`` urfd | ntu | upfall |
    other; ``group`` the unit kept together in cross-validation; ``size`` the frame's
    (width, height)."""

    name: str
    frames: list
    fps: float
    fall: Optional[tuple[int, int]] = None
    kind: str = "negative"
    group: str = ""
    size: tuple[int, int] = (EXPORT_SCALE, EXPORT_SCALE)
    dataset: str = "other"
    activity: str = ""  # a negative's daily-activity class (workers.offline.stgcn.activities)
    windows: dict = field(default_factory=dict, repr=False)  # (stride, window) -> refs


def read_urfd_labels(path: str | Path) -> dict[str, tuple[int, int]]:
    """``labels.csv`` (clip, frame 1-based, label -1/0/1, ...) -> ``{clip: (first, last)}``
    seqs (0-based) of the frames labelled 0 (falling)."""
    spans: dict[str, list[int]] = {}
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if len(row) >= 3 and row[2].strip() == "0":
                spans.setdefault(row[0].strip(), []).append(int(row[1]) - 1)
    return {clip: (min(s), max(s)) for clip, s in spans.items()}


def centre_y(refs_data: np.ndarray) -> np.ndarray:
    """Per step of a window ``(3, T, V, M)``: the mean y of slot 0's visible joints (NaN
    where the track is absent)."""
    conf = refs_data[2, :, :, 0]
    seen = conf > 0
    y = np.where(seen, refs_data[1, :, :, 0], 0.0).sum(axis=1)
    n = seen.sum(axis=1)
    return np.where(n > 0, y / np.maximum(n, 1), np.nan)


def estimate_fall(frames: list, fps: float) -> Optional[tuple[int, int]]:
    """The fall of the longest track of a clip known to hold one (NTU A043): from the
    first seq where its body centre has descended 20 % of the way from standing (median of
    its first 10 present steps) to down (the lowest 10 %) to the first seq at 80 %.
    None when the track does not descend by at least 0.1 of the frame height."""
    windows = CameraWindows(window=len(frames) + 1, stride=10 ** 6, num_person=1,
                            max_idle=10 ** 6, min_frames=1)
    for skel in frames:
        windows.push(skel)
    refs = windows.flush()
    if not refs:
        return None
    ref = max(refs, key=lambda r: r.seen)
    y = centre_y(ref.data)
    present = np.flatnonzero(~np.isnan(y))
    if len(present) < 10:
        return None
    y0 = float(np.median(y[present[:10]]))
    y1 = float(np.quantile(y[present], 0.9))
    if y1 - y0 < 0.1:
        return None
    start = present[np.argmax(y[present] >= y0 + 0.2 * (y1 - y0))]
    end = present[np.argmax(y[present] >= y0 + 0.8 * (y1 - y0))]
    return ref.frame_start + int(start), ref.frame_start + int(max(end, start))


def make_windows(clip: Clip, window: int, stride: int, min_frames: int, max_idle: int,
                 num_person: int, fps: Optional[float]) -> CameraWindows:
    """The action worker's CameraWindows for ``clip`` (resampled to ``fps`` where the windows
    support it)."""
    kw = {"fps": fps} if fps and "fps" in inspect.signature(CameraWindows).parameters else {}
    return CameraWindows(window=window, stride=stride, num_person=num_person, max_idle=max_idle,
                         min_frames=min_frames, camera=clip.name, **kw)


def clip_windows(clip: Clip, window: int, stride: int, min_frames: int = 32,
                 max_idle: int = 30, num_person: int = 2, fps: Optional[float] = None) -> list[WindowRef]:
    """The windows the action worker classifies for ``clip`` (``due()`` after every frame,
    ``flush()`` at the end), cached per settings."""
    key = (window, stride, min_frames, max_idle, num_person, fps)
    if key not in clip.windows:
        cw = make_windows(clip, window, stride, min_frames, max_idle, num_person, fps)
        out = []
        for skel in clip.frames:
            cw.push(skel)
            out.extend(cw.due())
        out.extend(cw.flush())
        clip.windows[key] = out
    return clip.windows[key]


def window_size(ref: WindowRef, clip: Clip) -> tuple[int, int]:
    """The frame size of a window (the ref's own where the windows carry it)."""
    w, h = getattr(ref, "width", 0), getattr(ref, "height", 0)
    return (int(w), int(h)) if w and h else tuple(clip.size)


def window_label(ref: WindowRef, fall: Optional[tuple[int, int]], share: float = 0.5) -> int:
    """UPRIGHT / FALLING / LYING / IGNORE for one window (see the module doc): FALLING when it
    holds at least ``share`` of the fall's frames (and the track is seen in them)."""
    if fall is None:
        return UPRIGHT
    fs, fe = fall
    if ref.frame_end < fs:
        return UPRIGHT
    if ref.frame_start > fe:
        return LYING
    lo, hi = max(fs, ref.frame_start), min(fe, ref.frame_end)
    span = max(ref.frame_end - ref.frame_start, 1)  # seqs -> steps (windows may be resampled)
    a, b = (round((x - ref.frame_start) * (ref.frames - 1) / span) for x in (lo, hi))
    steps = ref.data[2, a: b + 1, :, 0].sum(axis=1) > 0
    if hi - lo + 1 >= share * (fe - fs + 1) and steps.any():
        return FALLING
    return IGNORE


def to_class(label: int, classes: Sequence[str], activity: str = "") -> int:
    """A window label in the class list ``classes``: with ``CLASSES_3`` as it is; else
    falling is ``falling``, a negative clip's window its ``activity`` where that is a class,
    and the rest (lying after a fall too) ``not-falling``."""
    if label == IGNORE or tuple(classes) == CLASSES_3:
        return label
    if label == FALLING:
        return list(classes).index("falling")
    return list(classes).index(activity) if activity and activity in classes else 0


def clip_class(ref: WindowRef, clip: Clip, cfg: "FallConfig") -> int:
    """The class of one of ``clip``'s windows under ``cfg`` (or IGNORE)."""
    return to_class(window_label(ref, clip.fall, cfg.fall_share), cfg.classes, clip.activity)


def training_set(clips: Sequence[Clip], cfg: "FallConfig") -> tuple[np.ndarray, ...]:
    """Windows of ``clips`` at ``cfg.train_stride``: ``(data (N, 3, window, V, M) zero-padded
    at the end, labels (N,), lengths (N,), sizes (N, 2))``; ambiguous windows left out, at
    most ``cfg.max_per_clip`` not-falling windows per clip (a random choice)."""
    rng = np.random.default_rng(cfg.seed)
    picked: list[tuple[WindowRef, int, tuple[int, int]]] = []
    for clip in clips:
        rows = [(ref, clip_class(ref, clip, cfg), window_size(ref, clip))
                for ref in clip_windows(clip, cfg.window, cfg.train_stride, cfg.min_frames,
                                        num_person=cfg.num_person, fps=cfg.fps)]
        rows = [r for r in rows if r[1] != IGNORE]
        falls = [r for r in rows if r[1] == FALLING]
        rest = [r for r in rows if r[1] != FALLING]
        cap = cfg.skeleton_max_per_clip if clip.dataset in metrics.SKELETON else cfg.max_per_clip
        if len(rest) > cap:
            rest = [rest[i] for i in sorted(rng.choice(len(rest), cap, replace=False))]
        picked.extend(falls + rest)
    if not picked:
        raise ValueError("no training windows (are the clips shorter than min_frames?)")
    _, c, _, v, m = (1, *picked[0][0].data.shape)
    data = np.zeros((len(picked), c, cfg.window, v, m), dtype=np.float32)
    for i, (ref, _, _) in enumerate(picked):
        data[i, :, : ref.frames] = ref.data
    labels = np.array([y for _, y, _ in picked], dtype=np.int64)
    lengths = np.array([ref.frames for ref, _, _ in picked], dtype=np.int64)
    sizes = np.array([size for _, _, size in picked], dtype=np.int64)
    log.info("training set: %d windows, per class %s", len(labels),
             dict(zip(cfg.classes, np.bincount(labels, minlength=len(cfg.classes)).tolist())))
    return data, labels, lengths, sizes


def assign_folds(clips: Sequence[Clip], k: int) -> dict[str, int]:
    """Clip name -> fold: groups (an NTU subject, an UP-Fall trial's two cameras, else the
    clip) dealt round-robin over ``k`` folds per dataset, fall groups first, so every fold
    gets falls and negatives of every dataset."""
    groups: dict[str, list[Clip]] = {}
    for clip in clips:
        groups.setdefault(clip.group, []).append(clip)
    order = sorted(groups, key=lambda g: (groups[g][0].dataset,
                                          not any(c.kind == "fall" for c in groups[g]), g))
    fold_of = {g: i % k for i, g in enumerate(order)}
    return {c.name: fold_of[c.group] for c in clips}


# -- simulation of the action worker + rules, cross-validation -------------------------------
@dataclass
class FallConfig:
    """Everything the fall model's data, training and evaluation depend on."""

    classes: tuple[str, ...] = CLASSES_2
    window: int = 48  # the card's window (T kept per track); 48 beat 32 and 64 in CV
    vote_last: int = 0
    train_stride: int = 8  # windows per clip for training: one every train_stride frames
    fall_share: float = 0.5  # a window holding this share of the fall is labelled falling
    stride: int = 15  # the action worker's (settings.stride)
    score_stride: Optional[int] = None  # CV scores windows this often (None: stride); see at_stride
    min_frames: int = 32  # the action worker's (settings.min_frames)
    channels: Optional[list] = None  # block plan, see train.build_stgcn
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_per_clip: int = 32  # not-falling windows per clip (the daily-activity clips are long)
    skeleton_max_per_clip: int = 8  # the same for skeleton-only clips (thousands of them)
    mine_epochs: int = 5  # epochs more with the hard negatives added (0: none; see README)
    mine_threshold: float = 0.3  # a not-falling window scoring this for falling is a hard one
    mine_repeat: int = 2  # copies of each hard negative
    num_person: int = 1  # M: the track alone (M = 2 doubled the cost; the card says which)
    normalisation: str = "body"  # the card's (workers.action.classifier.NORMALISATIONS)
    augment: bool = True  # workers.offline.stgcn.augment.AugmentConfig's defaults
    fps: Optional[float] = None  # the card's fps, where the windows resample to it
    class_weight: Optional[str] = "balanced"
    cooldown_s: float = 10.0
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    confirmation: Optional[object] = None  # workers.action.confirm.Confirmation; None: no gate

    @property
    def scoring(self) -> "FallConfig":
        """This config with the stride windows are scored at (``score_stride``, else ``stride``)."""
        return replace(self, stride=self.score_stride or self.stride)

    def confirm(self):
        """The worker's gate for the rules (None: every decision raises)."""
        if self.confirmation is None:
            return None
        from workers.action.confirm import confirm

        fps, conf = self.fps or 30.0, self.confirmation
        return lambda ref, label: label != "falling" or confirm(ref, fps, conf)[0]


def train_fall(clips: Sequence[Clip], cfg: FallConfig, work_dir: Optional[str] = None):
    """A model trained on the windows of ``clips`` -> (model, TrainResult); then, with
    ``cfg.mine_epochs``, :func:`hard_negatives` added and ``mine_epochs`` more epochs."""
    from workers.offline.stgcn.augment import AugmentConfig, WindowDataset
    from workers.offline.stgcn.train import TrainOptions, build_stgcn, fit

    arrays = training_set(clips, cfg)
    aug = AugmentConfig() if cfg.augment else None
    model = build_stgcn(len(cfg.classes), channels=cfg.channels, seed=cfg.seed)
    opt = TrainOptions(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                       optimizer="adamw", weight_decay=cfg.weight_decay,
                       class_weight=cfg.class_weight,
                       vote_last=cfg.vote_last, device=cfg.device, seed=cfg.seed,
                       work_dir=work_dir, progress=cfg.progress)
    result = fit(model, WindowDataset(*arrays, cfg.normalisation, aug, seed=cfg.seed), opt)
    if cfg.mine_epochs:
        mined = hard_negatives(result.model, clips, cfg)
        if mined is not None:
            arrays = tuple(np.concatenate([a, *[m] * cfg.mine_repeat]) for a, m in zip(arrays, mined))
            more = fit(result.model, WindowDataset(*arrays, cfg.normalisation, aug, seed=cfg.seed + 1),
                       replace(opt, epochs=cfg.mine_epochs, seed=cfg.seed + 1))
            more.seconds += result.seconds
            result = more
    return result.model, result


def hard_negatives(model, clips: Sequence[Clip], cfg: FallConfig) -> Optional[tuple[np.ndarray, ...]]:
    """The not-falling windows of ``clips`` at the worker's stride that ``model`` scores
    ``cfg.mine_threshold`` or more for falling, as :func:`training_set` arrays (None if none)."""
    scored = score_clips(model, clips, cfg)
    k = list(cfg.classes).index("falling")
    rows = [(ref, y, window_size(ref, clip)) for clip in clips for ref, probs in scored[clip.name]
            for y in [clip_class(ref, clip, cfg)]
            if y not in (IGNORE, FALLING) and probs[k] >= cfg.mine_threshold]
    log.info("hard negatives: %d windows scoring >= %.2f for falling", len(rows), cfg.mine_threshold)
    if not rows:
        return None
    v, m = rows[0][0].data.shape[2:]
    data = np.zeros((len(rows), 3, cfg.window, v, m), dtype=np.float32)
    for i, (ref, _, _) in enumerate(rows):
        data[i, :, : ref.frames] = ref.data
    return (data, np.array([y for _, y, _ in rows], dtype=np.int64),
            np.array([r.frames for r, _, _ in rows], dtype=np.int64),
            np.array([sz for _, _, sz in rows], dtype=np.int64))


def score_clips(model, clips: Sequence[Clip], cfg: FallConfig) -> dict[str, list]:
    """Per clip, the worker's windows (stride, min_frames) with the model's probabilities,
    normalised as the classifier does: ``{clip: [(ref, probs (classes,)), ...]}`` in the
    order the worker classifies them."""
    from workers.offline.stgcn.augment import WindowDataset
    from workers.offline.stgcn.train import evaluate

    out = {}
    for clip in clips:
        refs = clip_windows(clip, cfg.window, cfg.stride, cfg.min_frames,
                            num_person=cfg.num_person, fps=cfg.fps)
        if not refs:
            out[clip.name] = []
            continue
        v, m = refs[0].data.shape[2:]
        data = np.zeros((len(refs), 3, cfg.window, v, m), dtype=np.float32)
        for i, ref in enumerate(refs):
            data[i, :, : ref.frames] = ref.data
        ds = WindowDataset(data, np.zeros(len(refs)), [r.frames for r in refs],
                           [window_size(r, clip) for r in refs], cfg.normalisation)
        probs = evaluate(model, ds.normalised(), 64, cfg.vote_last)
        out[clip.name] = list(zip(refs, probs))
    return out


def outcomes(clips: Sequence[Clip], scored: dict[str, list], cfg: FallConfig,
             threshold: float, consecutive: int) -> dict[str, dict]:
    """:func:`metrics.outcomes` of every clip under one rule setting."""
    return metrics.outcomes(clips, scored, cfg.classes, threshold, consecutive, cfg.cooldown_s,
                            cfg.confirm())


def sweep(clips: Sequence[Clip], scored: dict[str, list], cfg: FallConfig) -> list[dict]:
    return metrics.sweep(clips, scored, cfg.classes, cfg.cooldown_s, confirm=cfg.confirm())


_FOLD: dict = {}  # what forked fold processes read (clips, folds, cfg)


def _run_fold(f: int) -> dict[str, list]:
    """One fold in a forked process: ``{clip: [probs, ...]}`` of the fold's test clips."""
    import torch

    torch.set_num_threads(1)
    clips, folds, cfg = _FOLD["clips"], _FOLD["folds"], _FOLD["cfg"]
    test = [c for c in clips if folds[c.name] == f]
    train = [c for c in clips if folds[c.name] != f]
    log.info("fold %d: %d training clips, %d test clips", f + 1, len(train), len(test))
    model, _ = train_fall(train, replace(cfg, progress=False))
    return {name: [p for _, p in rows] for name, rows in score_clips(model, test, cfg.scoring).items()}


def cross_validate(clips: Sequence[Clip], cfg: FallConfig, k: int = 5, jobs: int = 1) -> dict[str, list]:
    """Leave-groups-out CV over ``k`` folds (:func:`assign_folds`): per fold a model trained on
    the other folds scores the fold's clips (``jobs`` folds at once, each in a process of its
    own with one torch thread: the same result). Returns the scored windows per clip, every
    ``cfg.scoring.stride`` steps (:func:`at_stride` gives the worker's)."""
    from multiprocessing import get_context

    folds = assign_folds(clips, k)
    todo = [f for f in range(k) if any(folds[c.name] == f for c in clips)]
    _FOLD.update(clips=clips, folds=folds, cfg=cfg)
    try:
        if jobs > 1:
            with get_context("fork").Pool(min(jobs, len(todo))) as pool:
                parts = pool.map(_run_fold, todo, chunksize=1)
        else:
            parts = [_run_fold(f) for f in todo]
    finally:
        _FOLD.clear()
    scored: dict[str, list] = {}
    for part in parts:
        for clip in clips:
            if clip.name in part:
                refs = clip_windows(clip, cfg.window, cfg.scoring.stride, cfg.min_frames,
                                    num_person=cfg.num_person, fps=cfg.fps)
                scored[clip.name] = list(zip(refs, part[clip.name]))
    return scored


def at_stride(scored: dict[str, list], scored_stride: int, stride: int) -> dict[str, list]:
    """Windows scored every ``scored_stride`` steps as the worker would classify them every
    ``stride`` steps (a multiple): per track its first window, every ``stride // scored_stride``-th
    after it, and its last (the one a flush classifies)."""
    if stride == scored_stride:
        return scored
    if stride % scored_stride:
        raise ValueError(f"stride {stride} is not a multiple of the scored stride {scored_stride}")
    k = stride // scored_stride
    out = {}
    for name, rows in scored.items():
        by_track: dict[int, list[int]] = {}
        for i, (ref, _) in enumerate(rows):
            by_track.setdefault(ref.track_id, []).append(i)
        keep = set()
        for idx in by_track.values():
            keep.update(idx[::k])
            keep.add(idx[-1])
        out[name] = [rows[i] for i in sorted(keep)]
    return out


def cross_dataset(clips: Sequence[Clip], cfg: FallConfig, test: str) -> tuple[dict, list]:
    """Train on every dataset but ``test`` (and the negatives of no dataset), score ``test``'s
    clips: (scored, sweep rows over ``test``'s clips)."""
    train = [c for c in clips if c.dataset != test]
    held = [c for c in clips if c.dataset == test]
    log.info("cross-dataset: %d training clips, test %s (%d clips), normalisation %s",
             len(train), test, len(held), cfg.normalisation)
    model, _ = train_fall(train, cfg)
    scored = score_clips(model, held, cfg)
    return scored, sweep(held, scored, cfg)
