"""Fall-training clips from the skeleton-only sets: each clip of SmartFallMM, NW-UCLA and
Penn Action through a virtual camera (3D sets), the pose worker's measured imperfections
and its tracker, as a labelled :class:`~workers.offline.stgcn.fall.Clip`
(:mod:`workers.offline.stgcn.skeletonsets` says how).

Names: ``sfmm-<clip>`` (dataset ``smartfall``, grouped by subject: the same person is never
on both sides of a cross-validation split), ``ucla-<clip>`` (``nwucla``, by subject),
``penn-<clip>`` (``penn``, by clip: the set names no people). Falls are SmartFallMM's
activities 10-14 with the range :func:`~workers.offline.stgcn.skeletonsets.derive_fall_3d`
gives; a fall clip whose range is not found is left out (it would be a fall without windows
labelled falling). Every other clip is daily activity: a negative.

One virtual camera per clip and ``seed`` (the same clip always gets the same camera for a
seed); ``views`` > 1 gives each clip more cameras (``<name>~v<k>``, the same group), for
training only.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from workers.offline.stgcn import skeletonsets as ss
from workers.offline.stgcn.fall import Clip
from workers.offline.stgcn.imperfections import Imperfections, apply

log = logging.getLogger(__name__)

UPRIGHT_DEG, LYING_DEG = 35.0, 60.0


def postures_3d(coco: np.ndarray) -> np.ndarray:
    """URFD-style posture per frame from 3D COCO-17 joints (:func:`coco_3d`, metres, y up; the
    torso from mid-hip to mid-shoulder): -1 upright (torso within 35 degrees of vertical and
    the hips above 0.6 m), 1 lying (torso beyond 60 degrees or hips below 0.35 m), 0 between
    (falling, crouching)."""
    hips = (coco[:, 11] + coco[:, 12]) / 2
    shoulders = (coco[:, 5] + coco[:, 6]) / 2
    torso = shoulders - hips
    angle = np.degrees(np.arccos(np.clip(torso[:, 1] / np.maximum(np.linalg.norm(torso, axis=1), 1e-6),
                                         -1.0, 1.0)))
    out = np.zeros(len(coco), dtype=int)
    out[(angle <= UPRIGHT_DEG) & (hips[:, 1] > 0.6)] = -1
    out[(angle >= LYING_DEG) | (hips[:, 1] < 0.35)] = 1
    return out


def postures_2d(coco: np.ndarray) -> np.ndarray:
    """Posture per frame of 2D COCO-17 pixels (Penn Action), by the still-down watch's test."""
    from workers.action.still_down import LYING, UPRIGHT, posture
    from shared.skeleton import Person, coco17_to_openpose18

    out = np.zeros(len(coco), dtype=int)
    for t, kp in enumerate(coco):
        op = coco17_to_openpose18(np.where(kp[:, 2:] > 0, kp, 0).astype(np.float32))
        p = posture(Person(op, np.zeros(4), 1.0))
        out[t] = -1 if p == UPRIGHT else 1 if p == LYING else 0
    return out


def track(name: str, people: list, size: tuple[int, int], fps: float) -> list:
    """Per-frame detections through the pose worker's tracker -> Skeletons per frame."""
    from shared.schemas import Skeletons
    from workers.offline.stgcn.fallsources import make_tracker

    tracker = make_tracker()
    return [Skeletons(camera=name, seq=i, ts=i / fps, width=size[0], height=size[1],
                      people=tuple(tracker.update(p).people), model="movenet")
            for i, p in enumerate(people)]


def label(raw: ss.RawClip, world: Optional[np.ndarray]) -> tuple[str, str, Optional[tuple[int, int]]]:
    """(kind, group, fall range) of one raw clip."""
    m = raw.meta
    if raw.set == "smartfallmm":
        group = f"sfmm-S{int(m['subject']):02d}"
        if int(m["activity"]) in ss.SFMM_FALLS:
            return "fall", group, ss.derive_fall_3d(world)
        return "negative", group, None
    if raw.set == "nwucla":
        return "negative", f"ucla-s{int(m['subject']):02d}", None
    return "negative", f"penn-{raw.name}", None


def convert(raw: ss.RawClip, imp: Imperfections, rng: np.random.Generator,
            calib: Optional[tuple[np.ndarray, float]] = None, name: Optional[str] = None) -> Optional[Clip]:
    """One raw clip -> a labelled Clip (None: a fall whose range is not found)."""
    name = name or ss.PREFIX[raw.set] + raw.name
    world = None
    if raw.set == "pennaction":
        coco = ss.penn_coco(raw)
        size = (int(raw.meta["width"]), int(raw.meta["height"]))
        postures = postures_2d(coco)
    else:
        world = ss.smooth(ss.to_world(raw, *(calib or (np.array([0.0, 1.0, 0.0]), None))))
        c3 = ss.coco_3d(raw, world)
        centre = world[:, 0, [0, 2]].mean(axis=0)
        camera = ss.sample_camera(rng, centre)
        coco = ss.project_clip(raw, world, camera)
        size = (camera.width, camera.height)
        postures = postures_3d(c3)
    kind, group, fall = label(raw, world)
    if kind == "fall" and fall is None:
        log.info("%s: no fall found in the 3D skeleton; left out", name)
        return None
    frames = track(name, apply(coco, postures, imp, rng), size, ss.FPS)
    return Clip(name, frames, ss.FPS, fall=fall, kind=kind, group=group, size=size,
                dataset=ss.DATASET[raw.set])


def _calibrations(raws: list[ss.RawClip]) -> dict[str, tuple[np.ndarray, float]]:
    """Floor per camera set-up: SmartFallMM per subject, NW-UCLA per view."""
    groups: dict[str, list[ss.RawClip]] = defaultdict(list)
    for r in raws:
        if r.set == "smartfallmm":
            groups[f"s{r.meta['subject']}"].append(r)
        elif r.set == "nwucla":
            groups[f"v{r.meta['view']}"].append(r)
    return {k: ss.calibrate(v) for k, v in groups.items()}


def _calib_key(r: ss.RawClip) -> str:
    return f"s{r.meta['subject']}" if r.set == "smartfallmm" else f"v{r.meta.get('view', '')}"


def _convert_job(job: tuple) -> Optional[Clip]:
    raw, imp, calib, seed, v = job
    rng = np.random.default_rng(ss.clip_seed(raw.name, seed * 31 + v))
    tag = ss.PREFIX[raw.set] + raw.name + (f"~v{v}" if v else "")
    return convert(raw, imp, rng, calib, tag)


def load_skeleton_clips(root: str | Path, imp: Imperfections, sets: Iterable[str] = ss.SETS,
                        seed: int = 0, views: int = 1, limit: Optional[int] = None,
                        progress: bool = True, processes: int = 1) -> list[Clip]:
    """Every clip of ``sets`` under ``root`` (``../shared/data/skeletons``) as labelled Clips
    (see the module doc), converted in ``processes`` processes (the same result for any)."""
    from multiprocessing import get_context

    from tqdm import tqdm

    clips: list[Clip] = []
    for name in sets:
        raws = list(ss.read_set(root, name, limit))
        calib = _calibrations(raws)
        jobs = [(raw, imp, calib.get(_calib_key(raw)), seed, v) for raw in raws for v in range(views)]
        bar = dict(desc=f"converting {name}", total=len(jobs), disable=not progress)
        if processes > 1:
            with get_context("fork").Pool(processes) as pool:
                done = list(tqdm(pool.imap(_convert_job, jobs, chunksize=8), **bar))
        else:
            done = [_convert_job(j) for j in tqdm(jobs, **bar)]
        clips.extend(c for c in done if c is not None)
    log.info("%d skeleton-only clips: %d falls, %d negatives (%.2f h)", len(clips),
             sum(c.kind == "fall" for c in clips), sum(c.kind == "negative" for c in clips),
             sum(len(c.frames) / c.fps for c in clips if c.kind == "negative") / 3600)
    return clips


def cached_skeleton_clips(root: str | Path, imp: Imperfections, cache: Optional[str | Path],
                          sets: Iterable[str] = ss.SETS, seed: int = 0, **kw) -> list[Clip]:
    """:func:`load_skeleton_clips`, each set kept in the folder ``cache`` as
    ``<set>-seed<seed>.pkl`` (made when absent; delete it to convert again, e.g. after
    measuring the imperfections anew)."""
    import pickle

    clips: list[Clip] = []
    for name in sets:
        path = Path(cache) / f"{name}-seed{seed}.pkl" if cache else None
        if path is not None and path.is_file():
            with open(path, "rb") as fh:
                part = pickle.load(fh)
            log.info("%d %s clips from %s", len(part), name, path)
        else:
            part = load_skeleton_clips(root, imp, sets=[name], seed=seed, **kw)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(f"{path}.tmp", "wb") as fh:
                    pickle.dump(part, fh, protocol=pickle.HIGHEST_PROTOCOL)
                Path(f"{path}.tmp").replace(path)
        clips.extend(part)
    return clips
