"""The skeleton-only sets brought to the pose worker's space: reading, the floor, the virtual
camera, the fall ranges, the measured imperfections and the converted clips."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest

from tests.conftest import shared_path
from workers.offline.stgcn import imperfections as imp_mod
from workers.offline.stgcn import skeletonsets as ss
from workers.offline.stgcn.skeletonclips import convert, postures_3d


def _smartfall(limit=None):
    root = shared_path("data", "skeletons")
    return root, list(ss.read_set(root, "smartfallmm", limit))


def test_read_set_decodes_every_clip_to_its_length_and_millimetres():
    root, clips = _smartfall(40)
    with open(root / "smartfallmm" / "clips.csv") as fh:
        rows = list(csv.DictReader(fh))[:40]
    assert [c.frames for c in clips] == [int(r["frames"]) for r in rows]
    pelvis_z = np.concatenate([c.joints[:, 0, 2] for c in clips]) / 1000.0
    assert 1.0 < np.median(pelvis_z) < 6.0  # metres from the depth camera, as its README says


def test_floor_is_found_and_a_standing_person_stands_on_it():
    _, clips = _smartfall()
    subject = [c for c in clips if c.meta["subject"] == clips[0].meta["subject"]]
    up, floor = ss.calibrate(subject)
    assert up[1] > np.cos(np.radians(15))  # the Kinect was nearly level
    walk = next(c for c in subject if c.meta["activity"] == "8")
    world = ss.to_world(walk, up, floor)
    ankles = world[:, [18, 19], 1]
    head = world[:, 2, 1]
    assert abs(float(np.median(ankles))) < 0.2  # feet on the floor
    assert 1.2 < float(np.median(head)) < 2.0  # the head at a person's height


@pytest.mark.parametrize("point, seen", [
    ((0.0, 1.0, 0.0), True),     # the target itself: the frame's centre
    ((0.0, 1.0, 10.0), False),   # behind the camera
    ((40.0, 1.0, 0.0), False),   # far to the side: outside the frame
])
def test_virtual_camera_projects_the_target_to_the_centre(point, seen):
    cam = ss.VirtualCamera((0.0, 2.0, 4.0), (0.0, 1.0, 0.0), 70.0, 640, 480)
    uv, ok = cam.project(np.array([point]))
    assert bool(ok[0]) == seen
    if seen:
        assert np.allclose(uv[0], (320, 240), atol=1e-6)


def test_image_up_is_world_up_and_left_stays_left():
    cam = ss.VirtualCamera((0.0, 1.0, -3.0), (0.0, 1.0, 0.0), 70.0, 640, 480)
    uv, _ = cam.project(np.array([[0.0, 1.5, 0.0], [0.5, 1.0, 0.0]]))
    assert uv[0, 1] < 240  # higher in the world, higher in the picture
    assert uv[1, 0] > 320  # +x (the source camera's right) to the right, looking along +z


def test_fall_range_is_derived_from_the_pelvis_of_fall_clips():
    _, clips = _smartfall()
    cal = {}
    by = defaultdict(list)
    for c in clips:
        by[c.meta["subject"]].append(c)
    falls = [c for c in clips if int(c.meta["activity"]) in ss.SFMM_FALLS]
    found = 0
    for c in falls[:40]:
        cal.setdefault(c.meta["subject"], ss.calibrate(by[c.meta["subject"]]))
        world = ss.to_world(c, *cal[c.meta["subject"]])
        r = ss.derive_fall_3d(world)
        if r is None:
            continue
        found += 1
        start, end = r
        assert 0 <= start < end < c.frames and (end - start) / ss.FPS < 2.0
        assert world[end, 0, 1] < world[start, 0, 1] - 0.15  # the pelvis came down (60 % of >= 0.3 m)
    assert found >= 36


def _imperfections(miss=0.0, jitter=0.0, score=0.8) -> imp_mod.Imperfections:
    q = [[score] * len(imp_mod.QUANTILES)] * 17
    return imp_mod.Imperfections(miss=[miss] * 3, miss_run=[2.0] * 3, joint_scores=[q] * 3,
                                 person_scores=[[0.7] * len(imp_mod.QUANTILES)] * 3,
                                 jitter=[jitter] * 17, frames=[1, 1, 1], keypoint_threshold=0.1,
                                 person_threshold=0.05)


def test_apply_without_imperfections_keeps_the_skeleton_as_the_adapter_maps_it():
    coco = np.zeros((3, 17, 3))
    coco[:, :, 0] = np.arange(17) * 10 + 100
    coco[:, :, 1] = 200
    coco[:, :, 2] = 1.0
    coco[1, 16, 2] = 0.0  # one joint outside the frame
    people = imp_mod.apply(coco, np.array([-1, -1, -1]), _imperfections(), np.random.default_rng(0))
    assert [len(p) for p in people] == [1, 1, 1]
    kp = people[1][0].keypoints
    assert kp[1, 0] == pytest.approx((coco[1, 5, 0] + coco[1, 6, 0]) / 2)  # the neck inserted
    assert kp[10, 2] == 0  # OpenPose-18 right ankle = COCO 16, unseen
    assert (kp[kp[:, 2] > 0, 2] == pytest.approx(0.8))


def test_apply_misses_frames_at_the_measured_rate():
    coco = np.zeros((4000, 17, 3))
    coco[:, :, :2] = np.random.default_rng(1).uniform(100, 300, (4000, 17, 2))
    coco[:, :, 2] = 1.0
    people = imp_mod.apply(coco, np.ones(4000, int), _imperfections(miss=0.2), np.random.default_rng(2))
    missed = np.array([not p for p in people])
    assert 0.16 < missed.mean() < 0.24
    runs = imp_mod._runs(missed)
    assert 1.6 < np.mean(runs) < 2.4  # the measured run length (2.0)


def test_imperfections_are_measured_on_the_pose_worker_own_detections(tmp_path):
    """Raw MoveNet rows of a real URFD clip (the pose worker's model and crop) -> figures a
    person lying is missed more than a person upright, and the jitter is small but not 0."""
    from shared.modelpaths import resolve_pose_model  # noqa: F401  (the models dir is ../shared)
    from shared.settings import make_camera
    from workers.offline.posetrain.detections import detect_camera
    from workers.pose.adapters import load_pose_model

    video = shared_path("data", "urfd", "fall-01-cam0.mp4")
    model = load_pose_model("movenet", shared_path("models", "movenet_multipose.onnx"),
                            providers=["CPUExecutionProvider"], threads=2)
    cam = make_camera(id="urfd-fall-01", source=str(video), crop=(320, 0, 320, 240))
    np.savez(tmp_path / "urfd-fall-01.npz", **detect_camera(cam, model))
    labels = imp_mod.load_urfd_labels(shared_path("data", "urfd", "labels.csv"))
    imp = imp_mod.measure(tmp_path, {"fall-01": labels["fall-01"]}, 0.05, 0.1)
    assert sum(imp.frames) == len(labels["fall-01"]) or sum(imp.frames) > 100
    assert 0 < float(np.median(imp.jitter)) < 0.02
    up, lying = np.asarray(imp.person_scores[0]), np.asarray(imp.person_scores[2])
    assert np.median(lying) < np.median(up)  # a person on the floor scores lower


def test_converted_fall_clip_is_tracked_labelled_and_grouped_by_subject():
    _, clips = _smartfall()
    fall = next(c for c in clips if int(c.meta["activity"]) in ss.SFMM_FALLS
                and c.meta["subject"] == "30")
    subject = [c for c in clips if c.meta["subject"] == "30"]
    clip = convert(fall, _imperfections(jitter=0.003), np.random.default_rng(0), ss.calibrate(subject))
    assert clip.kind == "fall" and clip.group == "sfmm-S30" and clip.dataset == "smartfall"
    assert clip.fall is not None and len(clip.frames) == fall.frames
    tracked = [f for f in clip.frames if f.people]
    assert len(tracked) > 0.8 * len(clip.frames)
    assert {p.track_id for f in tracked for p in f.people} == {1}  # one person, one id
    world = ss.to_world(fall, *ss.calibrate(subject))
    postures = postures_3d(ss.coco_3d(fall, world))
    assert postures[0] == -1 and postures[clip.fall[1] + 15] == 1  # standing, then lying
