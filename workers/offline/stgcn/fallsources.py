"""Fall-training clips from the pose stage's cached detections, and their labels.

``actionstream pose detections --config deploy/fall-training.yaml --out DIR`` caches
MoveNet's raw output of every clip (``DIR/<camera>.npz``). :func:`tracked_frames` replays
one through the pose worker's decoding and tracker (the worker's thresholds), giving the
per-frame :class:`~shared.schemas.Skeletons` that ``actionstream up --pose-only
--skeletons-out`` would have exported, without running the pose model again.

:func:`label_clip` names each clip's dataset, fall interval and cross-validation group
from its camera id (the same for the ``--skeletons`` route): ``urfd-fall-NN`` (URFD
``labels.csv``: the frames labelled 0), ``ntu-...A043`` (estimated descent), ``upfall-<clip>``
(UP-Fall ``labels.csv``; the fall range from :func:`workers.offline.stgcn.upfall.derive_fall`
on the tracked skeletons, else :func:`fill_from_trial`),
anything else a negative.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from workers.offline.stgcn.fall import FPS_OVERRIDE, NTU_RE, Clip, estimate_fall, read_urfd_labels
from workers.offline.stgcn.upfall import UpFallClip, derive_fall

log = logging.getLogger(__name__)


def worker_thresholds() -> tuple[float, float]:
    """(person, keypoint) thresholds the pose worker decodes MoveNet at (its model's)."""
    from workers.pose import movenet

    return movenet.DEFAULT_PERSON_THRESHOLD, movenet.DEFAULT_KEYPOINT_THRESHOLD


def make_tracker():
    """A tracker as the pose worker makes one for MoveNet: detections scoring at least the
    model's high threshold start tracks, weaker ones down to its low one only extend them."""
    from workers.pose.movenet import MoveNetModel
    from workers.pose.tracker import Tracker, TrackerConfig

    high, low = MoveNetModel.track_thresholds
    return Tracker(TrackerConfig(high_score=high, low_score=low))


def tracked_frames(path: str | Path, camera: Optional[str] = None,
                   person_threshold: Optional[float] = None, keypoint_threshold: Optional[float] = None,
                   tracker=None, runs: Optional[list[bool]] = None) -> tuple[list, float, tuple[int, int]]:
    """One cached ``<camera>.npz`` -> ``(Skeletons per frame, fps, (width, height))``,
    decoded at the worker's thresholds (or those given) and tracked by the worker's tracker.
    ``runs``: per frame, whether the model ran (motion gating); a frame where it did not
    repeats the last people, as the pose worker emits it."""
    from shared.schemas import Skeletons
    from workers.offline.posetrain.detections import load_people

    path = Path(path)
    camera = camera or path.stem
    pt, kt = worker_thresholds()
    people, ts, w, h, fps = load_people(path, pt if person_threshold is None else person_threshold,
                                        kt if keypoint_threshold is None else keypoint_threshold)
    tracker = tracker or make_tracker()
    frames, last = [], ()
    for i, (p, t) in enumerate(zip(people, ts)):
        if runs is None or i >= len(runs) or runs[i] or i == 0:
            last = tuple(tracker.update(p).people)
        frames.append(Skeletons(camera=camera, seq=i, ts=float(t), width=w, height=h, people=last,
                                model="movenet"))
    return frames, float(fps), (w, h)


def label_clip(clip: Clip, urfd: dict, upfall: dict[str, UpFallClip],
               derive_frames: Optional[list] = None) -> Optional[Clip]:
    """Set ``clip``'s dataset, kind, fall and group from its name (see the module doc);
    None when it cannot be used (a URFD clip without labels). ``derive_frames``: the
    frames to derive an UP-Fall range from (default: the clip's own)."""
    name = clip.name
    m = NTU_RE.search(name)
    if name.startswith("urfd-"):
        clip.dataset, clip.kind = "urfd", "fall"
        clip.fall = urfd.get(name[len("urfd-"):])
        if clip.fall is None:
            log.warning("%s: no falling frames in the URFD labels; skipped", name)
            return None
    elif m:
        clip.dataset, clip.group = "ntu", f"ntu-P{m.group(3)}"
        if m.group(5) == "043":
            clip.kind, clip.fall = "fall", estimate_fall(clip.frames, clip.fps)
            if clip.fall is None:
                log.warning("%s: no descent found; a fall clip without windows labelled falling", name)
    elif name.startswith("upfall-"):
        info = upfall.get(name[len("upfall-"):])
        if info is None:
            log.warning("%s: not in the UP-Fall labels; skipped", name)
            return None
        clip.dataset, clip.group = "upfall", info.group
        if info.fall:
            clip.kind = "fall"
            clip.fall = derive_fall(derive_frames or clip.frames, clip.fps)
            if clip.fall is None:
                log.warning("%s: no fall found in the skeletons; a fall clip without windows "
                            "labelled falling", name)
    else:
        clip.dataset = "other"
    return clip


def fill_from_trial(clips: list[Clip]) -> None:
    """An UP-Fall fall clip whose range was not found takes the range of its trial's other
    camera (the two cameras of a trial are synchronised: same frame count, and the derived
    ranges agree within a few frames)."""
    found = {c.group: c.fall for c in clips if c.dataset == "upfall" and c.fall is not None}
    for c in clips:
        if c.dataset == "upfall" and c.kind == "fall" and c.fall is None and c.group in found:
            c.fall = found[c.group]
            log.info("%s: fall range %s taken from the trial's other camera", c.name, c.fall)


def load_detection_clips(det_dir: str | Path, urfd: dict, upfall: dict[str, UpFallClip],
                         only: Optional[set] = None,
                         runs: Optional[dict[str, list[bool]]] = None) -> list[Clip]:
    """Every ``<camera>.npz`` of ``det_dir`` (or those named in ``only``) as a labelled
    :class:`Clip`, tracked as the pose worker tracks (with motion gating's ``runs`` per
    camera, when given)."""
    clips = []
    for path in sorted(Path(det_dir).glob("*.npz")):
        if path.name.endswith(".tmp.npz") or (only and path.stem not in only):
            continue
        frames, fps, size = tracked_frames(path, runs=(runs or {}).get(path.stem))
        clip = label_clip(Clip(path.stem, frames, fps, group=path.stem, size=size), urfd, upfall)
        if clip is not None:
            clips.append(clip)
    fill_from_trial(clips)
    log.info("%d clips from %s: %s", len(clips), det_dir,
             {d: sum(c.dataset == d for c in clips) for d in ("urfd", "ntu", "upfall", "other")})
    return clips


def load_export_clips(skeleton_dir: str | Path, labels_csv: Optional[str | Path],
                      upfall_csv: Optional[str | Path] = None) -> list[Clip]:
    """Every ``*.json`` export of ``skeleton_dir`` as a labelled :class:`Clip`
    (:func:`label_clip`)."""
    from shared.kinetics import read_exported_skeletons
    from workers.offline.stgcn.upfall import read_upfall_labels

    urfd = read_urfd_labels(labels_csv) if labels_csv else {}
    upfall = read_upfall_labels(upfall_csv) if upfall_csv else {}
    clips = []
    for path in sorted(Path(skeleton_dir).glob("*.json")):
        upf = upfall.get(path.stem[len("upfall-"):]) if path.stem.startswith("upfall-") else None
        fps = upf.fps if upf else FPS_OVERRIDE.get(path.stem, 30.0)
        camera, frames = read_exported_skeletons(path, fps=fps)
        clip = label_clip(Clip(camera, frames, fps, group=camera), urfd, upfall)
        if clip is not None:
            clips.append(clip)
    fill_from_trial(clips)
    log.info("%d clips from %s: %d falls, %d negatives", len(clips), skeleton_dir,
             sum(c.kind == "fall" for c in clips), sum(c.kind == "negative" for c in clips))
    return clips
