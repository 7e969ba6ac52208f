"""The fall model: training windows from actionstream's own skeleton exports, cross-validation
that simulates the action worker and its rules, the final model.

Clips are the per-camera JSON files of ``actionstream up --skeletons-out DIR`` (MoveNet
poses, tracked). Each clip is replayed through :class:`workers.action.window.CameraWindows`
exactly as the action worker does (same normalisation, M = 2 slot filling, zero-filled
gaps), so the training windows are the windows the model will see; training uses a finer
stride than the worker (more windows per clip), evaluation the worker's.

Clips and their fall interval (seqs, 0-based):

* ``urfd-fall-NN``: UR Fall Detection; ``labels.csv`` gives per frame -1 upright, 0 falling,
  1 lying; the fall is the span of 0 frames.
* ``ntu-...A043``: NTU "falling" (the whole clip holds one fall): the interval is estimated
  from the main track's body centre descending (:func:`estimate_fall`).
* everything else (NTU A001/A006, ``kin-*``, ``walking``): no fall (negatives).

Window labels (:func:`window_label`): ``falling`` when the window holds at least half of
the fall with the track present in it; ``lying`` when it starts after the fall ended;
``upright`` when it ends before the fall began; else ambiguous (not trained on).
With ``classes = ("not-falling", "falling")`` upright and lying merge (the shipped model:
MoveNet loses people lying at the bottom of URFD frames, so the exports hold no ``lying``
window at the worker's stride and a third class would have nothing to learn from).

Measured (5-fold CV, tiny plan, 8 epochs, AdamW 1e-3): card window 48 with every valid
position voting beat windows 32 and 64 and ``vote_last = 4`` (fewer false alerts at the
same or better recall); 16 epochs did worse than 8.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from workers.action.stgcn.data import read_exported_skeletons
from workers.action.window import CameraWindows, WindowRef

log = logging.getLogger(__name__)

UPRIGHT, FALLING, LYING, IGNORE = 0, 1, 2, -1
CLASSES_3 = ("upright", "falling", "lying")
CLASSES_2 = ("not-falling", "falling")
FPS_OVERRIDE = {"walking": 10.0}  # the walking video is 10 fps; the rest 30
NTU_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


@dataclass
class Clip:
    """One camera's export: ``frames`` the Skeletons in seq order; ``fall`` the (first, last)
    seq of the fall or None; ``group`` the unit kept together in cross-validation."""

    name: str
    frames: list
    fps: float
    fall: Optional[tuple[int, int]] = None
    kind: str = "negative"  # urfd | ntu-fall | negative
    group: str = ""
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


def load_clips(skeleton_dir: str | Path, labels_csv: Optional[str | Path]) -> list[Clip]:
    """Every ``*.json`` export of ``skeleton_dir`` as a :class:`Clip` (see the module doc)."""
    urfd = read_urfd_labels(labels_csv) if labels_csv else {}
    clips = []
    for path in sorted(Path(skeleton_dir).glob("*.json")):
        fps = FPS_OVERRIDE.get(path.stem, 30.0)
        camera, frames = read_exported_skeletons(path, fps=fps)
        clip = Clip(camera, frames, fps, group=camera)
        m = NTU_RE.search(camera)
        if camera.startswith("urfd-"):
            clip.fall, clip.kind = urfd.get(camera[len("urfd-"):]), "urfd"
            if clip.fall is None:
                log.warning("%s: no falling frames in %s; skipped", camera, labels_csv)
                continue
        elif m:
            clip.group = f"ntu-P{m.group(3)}"
            if m.group(5) == "043":
                clip.fall, clip.kind = estimate_fall(frames, fps), "ntu-fall"
                if clip.fall is None:
                    log.warning("%s: no descent found; kept as a fall clip without windows "
                                "labelled falling", camera)
        clips.append(clip)
    log.info("%d clips from %s: %d URFD, %d NTU falls, %d negatives", len(clips), skeleton_dir,
             sum(c.kind == "urfd" for c in clips), sum(c.kind == "ntu-fall" for c in clips),
             sum(c.kind == "negative" for c in clips))
    return clips


def clip_windows(clip: Clip, window: int, stride: int, min_frames: int = 32,
                 max_idle: int = 30, num_person: int = 2) -> list[WindowRef]:
    """The windows the action worker classifies for ``clip`` (``due()`` after every frame,
    ``flush()`` at the end), cached per settings."""
    key = (window, stride, min_frames, max_idle, num_person)
    if key not in clip.windows:
        cw = CameraWindows(window=window, stride=stride, num_person=num_person,
                           max_idle=max_idle, min_frames=min_frames, camera=clip.name)
        out = []
        for skel in clip.frames:
            cw.push(skel)
            out.extend(cw.due())
        out.extend(cw.flush())
        clip.windows[key] = out
    return clip.windows[key]


def window_label(ref: WindowRef, fall: Optional[tuple[int, int]]) -> int:
    """UPRIGHT / FALLING / LYING / IGNORE for one window (see the module doc)."""
    if fall is None:
        return UPRIGHT
    fs, fe = fall
    if ref.frame_end < fs:
        return UPRIGHT
    if ref.frame_start > fe:
        return LYING
    lo, hi = max(fs, ref.frame_start), min(fe, ref.frame_end)
    steps = ref.data[2, lo - ref.frame_start: hi - ref.frame_start + 1, :, 0].sum(axis=1) > 0
    if hi - lo + 1 >= 0.5 * (fe - fs + 1) and steps.any():
        return FALLING
    return IGNORE


def to_class(label: int, classes: Sequence[str]) -> int:
    """A window label in the class list ``classes`` (2 classes: lying counts as not-falling)."""
    if label == IGNORE or len(classes) == 3:
        return label
    return 1 if label == FALLING else 0


def training_set(clips: Sequence[Clip], classes: Sequence[str], window: int, stride: int,
                 min_frames: int = 32, max_per_clip: int = 400,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of ``clips`` at ``stride``: ``(data (N, 3, window, V, M) zero-padded at the
    end, labels (N,), lengths (N,))``; ambiguous windows left out, at most ``max_per_clip``
    windows per clip (a random choice, the falling ones kept)."""
    rng = np.random.default_rng(seed)
    picked: list[tuple[WindowRef, int]] = []
    for clip in clips:
        rows = [(ref, to_class(window_label(ref, clip.fall), classes))
                for ref in clip_windows(clip, window, stride, min_frames)]
        rows = [r for r in rows if r[1] != IGNORE]
        falls = [r for r in rows if r[1] == FALLING]
        rest = [r for r in rows if r[1] != FALLING]
        if len(rest) > max_per_clip:
            rest = [rest[i] for i in sorted(rng.choice(len(rest), max_per_clip, replace=False))]
        picked.extend(falls + rest)
    if not picked:
        raise ValueError("no training windows (are the clips shorter than min_frames?)")
    _, c, _, v, m = (1, *picked[0][0].data.shape)
    data = np.zeros((len(picked), c, window, v, m), dtype=np.float32)
    for i, (ref, _) in enumerate(picked):
        data[i, :, : ref.frames] = ref.data
    labels = np.array([y for _, y in picked], dtype=np.int64)
    lengths = np.array([ref.frames for ref, _ in picked], dtype=np.int64)
    log.info("training set: %d windows, per class %s", len(labels),
             dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist())))
    return data, labels, lengths


def assign_folds(clips: Sequence[Clip], k: int) -> dict[str, int]:
    """Clip name -> fold: groups (an NTU subject, else the clip) dealt round-robin over
    ``k`` folds, fall groups first so every fold gets falls."""
    groups: dict[str, list[Clip]] = {}
    for clip in clips:
        groups.setdefault(clip.group, []).append(clip)
    order = sorted(groups, key=lambda g: (not any(c.fall for c in groups[g]),
                                          not g.startswith("urfd"), g))
    fold_of = {g: i % k for i, g in enumerate(order)}
    return {c.name: fold_of[c.group] for c in clips}


# -- simulation of the action worker + rules, cross-validation -------------------------------
@dataclass
class FallConfig:
    """Everything the fall model's data, training and evaluation depend on."""

    classes: tuple[str, ...] = CLASSES_2
    window: int = 48  # the card's window (T kept per track); 48 beat 32 and 64 in CV
    vote_last: int = 0
    train_stride: int = 6  # windows per clip for training: one every train_stride frames
    stride: int = 15  # the action worker's (settings.stride)
    min_frames: int = 32  # the action worker's (settings.min_frames)
    channels: Optional[list] = None  # block plan, see train.build_stgcn
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_per_clip: int = 200
    random_move: bool = True
    class_weight: Optional[str] = "balanced"
    cooldown_s: float = 10.0
    seed: int = 0
    device: str = "auto"
    progress: bool = True


def train_fall(clips: Sequence[Clip], cfg: FallConfig, work_dir: Optional[str] = None):
    """A model trained on the windows of ``clips`` -> (model, TrainResult)."""
    from workers.action.stgcn.feeder import ArrayDataset
    from workers.action.stgcn.train import TrainOptions, build_stgcn, fit

    data, labels, lengths = training_set(clips, cfg.classes, cfg.window, cfg.train_stride,
                                         cfg.min_frames, cfg.max_per_clip, cfg.seed)
    ds = ArrayDataset(data, labels, lengths, random_move=cfg.random_move, seed=cfg.seed)
    model = build_stgcn(len(cfg.classes), channels=cfg.channels, seed=cfg.seed)
    opt = TrainOptions(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                       optimizer="adamw", weight_decay=cfg.weight_decay,
                       class_weight=cfg.class_weight,
                       vote_last=cfg.vote_last, device=cfg.device, seed=cfg.seed,
                       work_dir=work_dir, progress=cfg.progress)
    result = fit(model, ds, opt)
    return result.model, result


def score_clips(model, clips: Sequence[Clip], cfg: FallConfig,
                fixed_t: bool = False) -> dict[str, list]:
    """Per clip, the worker's windows (stride, min_frames) with the model's probabilities:
    ``{clip: [(ref, probs (classes,)), ...]}`` in the order the worker classifies them.
    ``fixed_t``: score as a fixed-T export would (windows padded to ``cfg.window``)."""
    from workers.action.stgcn.feeder import ArrayDataset
    from workers.action.stgcn.train import evaluate

    out = {}
    for clip in clips:
        refs = clip_windows(clip, cfg.window, cfg.stride, cfg.min_frames)
        if not refs:
            out[clip.name] = []
            continue
        v, m = refs[0].data.shape[2:]
        data = np.zeros((len(refs), 3, cfg.window, v, m), dtype=np.float32)
        for i, ref in enumerate(refs):
            data[i, :, : ref.frames] = ref.data
        if fixed_t:  # a fixed-T model: every window zero-padded to the card's window
            probs = _score_padded(model, data, [r.frames for r in refs], cfg.vote_last)
        else:
            ds = ArrayDataset(data, np.zeros(len(refs)), [r.frames for r in refs])
            probs = evaluate(model, ds, 64, cfg.vote_last)
        out[clip.name] = list(zip(refs, probs))
    return out


def _score_padded(model, data: np.ndarray, lengths: list, vote_last: int) -> np.ndarray:
    """Probabilities ``(N, classes)`` of windows ``(N, 3, window, V, M)`` run at full T."""
    import torch

    from workers.action.stgcn.train import voted_logits

    with torch.no_grad():
        logits = voted_logits(model.eval(), torch.from_numpy(data),
                              torch.tensor(lengths), vote_last)
    return torch.softmax(logits.double(), dim=1).float().numpy()


def clip_events(rows: list, classes: Sequence[str], threshold: float, consecutive: int,
                cooldown_s: float) -> list:
    """The ``falling`` events the worker's rules raise on one clip's scored windows."""
    from workers.action.rules import Rule, Rules

    rules = Rules([Rule("falling", threshold, consecutive, cooldown_s)], clock=lambda: 0.0)
    events = []
    for ref, probs in rows:
        events.extend(rules.decide(ref, probs, classes, "fall"))
    return events


def clip_outcome(clip: Clip, events: list) -> dict:
    """One clip's figures: detected, latency_s (first event at or after the fall start,
    relative to the fall's end), false alerts (events before the fall, or any on a
    negative clip)."""
    if clip.kind == "negative":
        return {"kind": clip.kind, "false": len(events)}
    if clip.kind == "ntu-fall" or clip.fall is None:
        return {"kind": clip.kind, "detected": bool(events), "false": 0}
    fs, fe = clip.fall
    after = [e for e in events if e.frame_end >= fs]
    out = {"kind": clip.kind, "detected": bool(after),
           "false": sum(e.frame_end < fs for e in events)}
    if after:
        out["latency_s"] = round((after[0].frame_end - fe) / clip.fps, 3)
    return out


def summarise(outcomes: dict[str, dict]) -> dict:
    """Recall (URFD, NTU, all), latency after the fall ends (median, max; URFD), false
    alerts per negative clip and before URFD falls."""
    kinds = {k: [o for o in outcomes.values() if o["kind"] == k]
             for k in ("urfd", "ntu-fall", "negative")}
    falls = kinds["urfd"] + kinds["ntu-fall"]
    lat = [o["latency_s"] for o in kinds["urfd"] if "latency_s" in o]
    neg = [o["false"] for o in kinds["negative"]]

    def rate(xs):
        return round(sum(o["detected"] for o in xs) / len(xs), 3) if xs else None

    return {"recall": rate(falls), "recall_urfd": rate(kinds["urfd"]),
            "recall_ntu": rate(kinds["ntu-fall"]), "fall_clips": len(falls),
            "latency_median_s": round(float(np.median(lat)), 2) if lat else None,
            "latency_max_s": round(float(np.max(lat)), 2) if lat else None,
            "false_per_negative_clip": round(float(np.mean(neg)), 3) if neg else None,
            "negative_clips": len(neg), "false_negative_total": int(sum(neg)),
            "false_before_fall_urfd": int(sum(o["false"] for o in kinds["urfd"]))}


def outcomes(clips: Sequence[Clip], scored: dict[str, list], cfg: FallConfig,
             threshold: float, consecutive: int) -> dict[str, dict]:
    """:func:`clip_outcome` of every clip under one rule setting."""
    return {c.name: clip_outcome(c, clip_events(scored[c.name], cfg.classes, threshold,
                                                consecutive, cfg.cooldown_s))
            for c in clips}


def sweep(clips: Sequence[Clip], scored: dict[str, list], cfg: FallConfig,
          thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
          consecutive: Sequence[int] = (1, 2)) -> list[dict]:
    """:func:`summarise` for every (threshold, consecutive) rule setting."""
    rows = []
    for thr in thresholds:
        for cons in consecutive:
            rows.append({"threshold": thr, "consecutive": cons,
                         **summarise(outcomes(clips, scored, cfg, thr, cons))})
    return rows


def recommend(rows: list[dict], slack: float = 0.1) -> dict:
    """The rule setting with the fewest false alerts (negative clips + before URFD falls)
    among those within ``slack`` of the best recall (ties: the higher recall, the lower
    median latency, the lower threshold)."""
    best = max(r["recall"] or 0 for r in rows)
    ok = [r for r in rows if (r["recall"] or 0) >= best - slack]
    return min(ok, key=lambda r: (r["false_negative_total"] + r["false_before_fall_urfd"],
                                  -(r["recall"] or 0), r["latency_median_s"] or 0,
                                  r["threshold"]))


def cross_validate(clips: Sequence[Clip], cfg: FallConfig, k: int = 5) -> tuple[dict, list]:
    """Leave-clips-out CV over ``k`` folds (:func:`assign_folds`): per fold a model trained on
    the other folds scores the fold's clips. Returns (scored windows per clip, sweep rows)."""
    folds = assign_folds(clips, k)
    scored: dict[str, list] = {}
    for f in range(k):
        test = [c for c in clips if folds[c.name] == f]
        train = [c for c in clips if folds[c.name] != f]
        if not test:
            continue
        log.info("fold %d/%d: %d training clips, test %s", f + 1, k, len(train),
                 [c.name for c in test])
        model, _ = train_fall(train, cfg)
        scored.update(score_clips(model, test, cfg))
    return scored, sweep(clips, scored, cfg)
