"""The skeleton-only sets of ``../shared/data/skeletons`` (SmartFallMM, NW-UCLA, Penn Action)
brought to the pose worker's skeleton space.

None of them is the pose worker's output: SmartFallMM and NW-UCLA are 3D joints from a
depth camera (millimetres, camera space), Penn Action 2D joints annotated by hand. Each
clip becomes a :class:`~workers.offline.stgcn.fall.Clip` of per-frame
:class:`~shared.schemas.Skeletons`, as the pose worker would have published it:

1. **A virtual camera** (:class:`VirtualCamera`, :func:`sample_camera`): the 3D skeleton is
   set on a floor (``y`` up, the lowest joints at 0) and seen through a pinhole camera at
   a mount users have — on a wall (1–2 m), high in a corner (2–2.7 m) or on the ceiling
   looking down steeply — at 1–7 m, turned anywhere around the person, with a horizontal
   field of view of 55–100° and a 4:3 or 16:9 frame. Joints behind the camera or outside
   the frame are not seen (people cut by the frame edge).
2. **The pose model's joints**: the COCO-17 keypoints (SmartFallMM has them; NW-UCLA's and
   Penn Action's face joints are placed from the head) become OpenPose-18 exactly as the
   pose worker's MoveNet adapter makes them (neck = mid-shoulder,
   :func:`shared.skeleton.coco17_to_openpose18`).
3. **The pose worker's imperfections** (:mod:`workers.offline.stgcn.imperfections`, measured
   on its own detections of the videos at hand): keypoint jitter per joint, joints missed
   per posture, frames where nobody is detected, confidences and person scores.
4. **The worker's tracker** gives the track ids, as on real video.

Clips are resampled to nothing: all three sets are 30 fps (the card's rate); the windows
resample on their time grid as the worker does. SmartFallMM falls (activities 10–14) get a
fall range derived from the 3D pelvis height (:func:`derive_fall_3d`), as UP-Fall's are
derived from its skeletons.
"""

from __future__ import annotations

import csv
import lzma
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

log = logging.getLogger(__name__)

SETS = ("smartfallmm", "nwucla", "pennaction")
DATASET = {"smartfallmm": "smartfall", "nwucla": "nwucla", "pennaction": "penn"}
PREFIX = {"smartfallmm": "sfmm-", "nwucla": "ucla-", "pennaction": "penn-"}
FPS = 30.0
SFMM_FALLS = range(10, 15)  # activities 10-14 are falls (the set's README)

# COCO-17 rows from each set's joints (index into the set's joints); None: placed from the head
_SFMM_COCO = list(range(3, 20))  # indices 3-19 are COCO-17 in COCO's order
# NW-UCLA (Kinect v1): 3 head, 4/8 l/r shoulder, 5/9 elbows, 6/10 wrists, 12/16 hips, 13/17
# knees, 14/18 ankles
_UCLA_BODY = {5: 4, 6: 8, 7: 5, 8: 9, 9: 6, 10: 10, 11: 12, 12: 16, 13: 13, 14: 17, 15: 14, 16: 18}
_UCLA_HEAD, _UCLA_NECK = 3, 2
# Penn Action: 0 head, 1/2 l/r shoulder, 3/4 elbows, 5/6 wrists, 7/8 hips, 9/10 knees, 11/12 ankles
_PENN_BODY = {5 + i: 1 + i for i in range(12)}


@dataclass(frozen=True)
class RawClip:
    """One clip as stored: ``joints`` (frames, J, 3) in the set's units; ``meta`` its CSV row."""

    set: str
    name: str
    joints: np.ndarray
    meta: dict

    @property
    def frames(self) -> int:
        return len(self.joints)


def read_rows(root: str | Path, name: str) -> list[dict[str, str]]:
    """The rows of one set's ``root``/``name``/clips.csv (its clips' names and metadata)."""
    with open(Path(root) / name / "clips.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def read_set(root: str | Path, name: str, limit: Optional[int] = None) -> Iterator[RawClip]:
    """The clips of one set (``root``/``name``/clips.csv + skeletons.npy.xz), decoded."""
    deltas = np.load(lzma.open(Path(root) / name / "skeletons.npy.xz"))
    for row in read_rows(root, name)[:limit]:
        o, n = int(row["offset"]), int(row["frames"])
        joints = np.cumsum(deltas[o:o + n].astype(np.int64), axis=0).astype(np.float64)
        yield RawClip(name, row["clip"], joints, row)


# -- 3D: to a floor, then through a virtual camera --------------------------------------------
def source_up(clip: RawClip) -> np.ndarray:
    """The clip's points in metres with the source's vertical axis pointing up (SmartFallMM's
    y points down)."""
    p = clip.joints / 1000.0
    return p * np.array([1.0, -1.0, 1.0]) if clip.set == "smartfallmm" else p


def calibrate(clips: list[RawClip]) -> tuple[np.ndarray, float]:
    """The floor of clips recorded by one camera set-up: ``(up, floor)``, the up direction (the
    normal of the plane fitted to every ankle position of them, least squares twice, the
    second time without the ankles more than 10 cm off the first plane: raised feet, steps;
    the source's own vertical where the fit leans more than 20 degrees from it) and the
    floor's height along it (the ankles' 5th percentile less 7 cm)."""
    ankles = {"smartfallmm": (18, 19), "nwucla": (14, 18)}[clips[0].set]
    pts = np.concatenate([source_up(c)[:, ankles].reshape(-1, 3) for c in clips])
    keep = np.ones(len(pts), bool)
    for _ in range(2):
        centre = pts[keep].mean(axis=0)
        normal = np.linalg.svd(pts[keep] - centre, full_matrices=False)[2][-1]
        keep = np.abs((pts - centre) @ normal) < 0.10
    normal = normal if normal[1] > 0 else -normal
    if normal[1] < np.cos(np.radians(20)):
        log.warning("%s: the ankles give no floor (normal %s); the source's vertical is used",
                    clips[0].name, np.round(normal, 2))
        normal = np.array([0.0, 1.0, 0.0])
    return normal, float(np.quantile(pts @ normal, 0.05) - 0.07)


def rotation_to_y(up: np.ndarray) -> np.ndarray:
    """The rotation (3, 3) taking the unit vector ``up`` to (0, 1, 0) (Rodrigues)."""
    y = np.array([0.0, 1.0, 0.0])
    v, c = np.cross(up, y), float(up @ y)
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def to_world(clip: RawClip, up: np.ndarray = np.array([0.0, 1.0, 0.0]),
             floor: Optional[float] = None) -> np.ndarray:
    """(frames, J, 3) metres, ``y`` up (along ``up``, the floor's normal in the source
    frame), the floor at 0 (``floor``, else the clip's lowest joints), the person's first
    position above the origin."""
    p = source_up(clip) @ rotation_to_y(np.asarray(up, float)).T
    p[..., 1] -= floor if floor is not None else np.quantile(p[..., 1].min(axis=1), 0.02)
    start = p[: min(15, len(p))].reshape(-1, 3).mean(axis=0)
    p[..., 0] -= start[0]
    p[..., 2] -= start[2]
    return p


def smooth(world: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """The depth camera's own frame-to-frame jitter taken out (a Gaussian of ``sigma`` frames
    along time), so that the pose worker's measured jitter is what is added, not on top of
    the sensor's: unsmoothed SmartFallMM tracks moved 0.0063 body sizes per frame at rest,
    the pose worker's real ones 0.0039."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(world, sigma, axis=0, mode="nearest") if sigma > 0 else world


def coco_3d(clip: RawClip, world: np.ndarray) -> np.ndarray:
    """(frames, 17, 3) COCO-17 joints in world metres; NW-UCLA's face placed from the head."""
    if clip.set == "smartfallmm":
        return world[:, _SFMM_COCO]
    out = np.zeros((len(world), 17, 3))
    for c, j in _UCLA_BODY.items():
        out[:, c] = world[:, j]
    head, neck = world[:, _UCLA_HEAD], world[:, _UCLA_NECK]
    lateral = world[:, 4] - world[:, 8]  # left shoulder - right shoulder
    lateral /= np.maximum(np.linalg.norm(lateral, axis=1, keepdims=True), 1e-6)
    up = head - neck
    up /= np.maximum(np.linalg.norm(up, axis=1, keepdims=True), 1e-6)
    forward = np.cross(lateral, up)  # the face's direction (right-handed: left x up)
    out[:, 0] = head + 0.08 * forward
    out[:, 1] = head + 0.06 * forward + 0.035 * lateral + 0.02 * up
    out[:, 2] = head + 0.06 * forward - 0.035 * lateral + 0.02 * up
    out[:, 3] = head + 0.075 * lateral
    out[:, 4] = head - 0.075 * lateral
    return out


@dataclass(frozen=True)
class VirtualCamera:
    """A pinhole camera at ``position`` (metres, y up) looking at ``target``; ``hfov`` degrees."""

    position: tuple[float, float, float]
    target: tuple[float, float, float]
    hfov: float
    width: int
    height: int
    mount: str = "wall"

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 3) world points -> ((..., 2) pixels, (...) seen: in front and inside the frame)."""
        c, t = np.asarray(self.position), np.asarray(self.target)
        f = (t - c) / np.linalg.norm(t - c)
        r = np.cross([0.0, 1.0, 0.0], f)
        r /= max(np.linalg.norm(r), 1e-9)
        d = np.cross(r, f)  # image down
        rel = points - c
        xc, yc, zc = rel @ r, rel @ d, rel @ f
        focal = (self.width / 2) / np.tan(np.radians(self.hfov) / 2)
        z = np.maximum(zc, 1e-6)
        uv = np.stack([self.width / 2 + focal * xc / z, self.height / 2 + focal * yc / z], axis=-1)
        seen = (zc > 0.1) & (uv[..., 0] >= 0) & (uv[..., 0] < self.width) \
            & (uv[..., 1] >= 0) & (uv[..., 1] < self.height)
        return uv, seen


MOUNTS = {  # (height m, distance m from the person's start, look-at height m)
    "wall": ((1.0, 2.0), (1.5, 6.0), (0.5, 1.1)),
    "corner": ((2.0, 2.7), (2.0, 7.0), (0.3, 0.9)),
    "ceiling": ((2.4, 2.7), (0.8, 2.5), (0.0, 0.5)),
}
FRAMES = ((640, 480), (640, 360), (1280, 720), (1280, 960))


def sample_camera(rng: np.random.Generator, centre: np.ndarray) -> VirtualCamera:
    """A camera a home might have, around a person whose path is centred at ``centre``
    (x, z): a mount (wall 50 %, corner 35 %, ceiling 15 %), any azimuth, a look-at point
    near the person (not always the frame's centre), a field of view and a frame."""
    mount = rng.choice(list(MOUNTS), p=[0.5, 0.35, 0.15])
    (h0, h1), (d0, d1), (t0, t1) = MOUNTS[mount]
    az = rng.uniform(-np.pi, np.pi)
    dist = rng.uniform(d0, d1)
    pos = (centre[0] + dist * np.sin(az), rng.uniform(h0, h1), centre[1] + dist * np.cos(az))
    off = rng.normal(0.0, 0.35, 2)
    target = (centre[0] + off[0], rng.uniform(t0, t1), centre[1] + off[1])
    w, h = FRAMES[rng.integers(len(FRAMES))]
    return VirtualCamera(tuple(float(v) for v in pos), tuple(float(v) for v in target),
                         float(rng.uniform(55.0, 100.0)), int(w), int(h), str(mount))


def clip_seed(name: str, seed: int) -> int:
    """A per-clip seed that does not depend on the order clips are read in."""
    return zlib.crc32(name.encode()) ^ (seed * 0x9E3779B1 & 0xFFFFFFFF)


def project_clip(clip: RawClip, world: np.ndarray, camera: VirtualCamera) -> np.ndarray:
    """A 3D clip (its :func:`to_world` points) -> (frames, 17, 3) COCO-17 pixels + seen flag
    (1.0 / 0.0), clean."""
    uv, seen = camera.project(coco_3d(clip, world))
    return np.concatenate([uv, seen[..., None].astype(np.float64)], axis=-1)


def penn_coco(clip: RawClip) -> np.ndarray:
    """Penn Action (frames, 13, 3) tenths of pixels + visibility -> (frames, 17, 3) COCO-17
    pixels + seen flag; the face from the head (eyes and ears beside it)."""
    j = clip.joints
    seen = np.where(j[:, :, 2] > 0, 1.0, 0.5)  # 0.5: annotated as not seen (a guess)
    out = np.zeros((len(j), 17, 3))
    for c, k in _PENN_BODY.items():
        out[:, c, :2] = j[:, k, :2] / 10.0
        out[:, c, 2] = seen[:, k]
    head = j[:, 0, :2] / 10.0
    sh = out[:, 5, :2] - out[:, 6, :2]
    size = np.maximum(np.linalg.norm(sh, axis=1, keepdims=True), 1.0)
    lateral = sh / size
    for c, (a, b) in enumerate([(0, 0), (0.25, -0.15), (-0.25, -0.15), (0.5, 0), (-0.5, 0)]):
        out[:, c, :2] = head + size * (a * lateral + b * np.array([0.0, 1.0]))
        out[:, c, 2] = seen[:, 0]
    return out


# -- fall ranges from the 3D skeleton -----------------------------------------------------------
def derive_fall_3d(world: np.ndarray, fps: float = FPS) -> Optional[tuple[int, int]]:
    """A SmartFallMM fall clip's (first, last) frame of the fall from the pelvis height
    (``world`` (frames, J, 3), joint 0 the pelvis, y up, metres, smoothed over 5 frames):
    standing is the median height of the first 0.5 s, down its 5th percentile after that;
    the down score is the fraction of that drop made; the fall ends at the first frame from
    which the score stays >= 0.8 for 0.3 s and starts at the last frame before it with a
    score <= 0.2. None when the pelvis drops less than 0.3 m (no fall in the clip)."""
    h = np.convolve(np.pad(world[:, 0, 1], 2, mode="edge"), np.ones(5) / 5, mode="valid")
    n, lead = len(h), max(3, int(0.5 * fps))
    if n < lead + fps // 2:
        return None
    stand = float(np.median(h[:lead]))
    down = float(np.quantile(h[lead:], 0.05))
    if stand - down < 0.3:
        return None
    score = (stand - h) / (stand - down)
    hold = max(1, int(0.3 * fps))
    end = next((i for i in range(n - hold + 1) if (score[i: i + hold] >= 0.8).all()), None)
    if end is None:
        return None
    before = np.flatnonzero(score[:end] <= 0.2)
    start = int(before[-1]) if len(before) else 0
    return start, int(end)
