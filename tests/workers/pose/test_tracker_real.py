"""The tracker on real detections: MoveNet on UR Fall clips (one person walks, falls and
lies), as the pose worker decodes and tracks them."""

from __future__ import annotations

import csv
import json
from collections import Counter

import cv2
import numpy as np
import pytest

from shared.skeleton import Person
from tests.conftest import shared_path as shared_file
from tests.workers.pose.tracking import assert_same_updates, resumed, run
from workers.pose.tracker import Tracker, TrackerConfig


# -- real data: MoveNet on a UR Fall clip ------------------------------------------------

def urfd_window(clip: str, before: int = 30, after: int = 25) -> tuple[range, dict[int, int]]:
    """Frames (0-based) from ``before`` frames ahead of the fall to ``after`` into lying,
    and the labels (-1 upright, 0 falling, 1 lying) by 0-based frame."""
    with shared_file("data", "urfd", "labels.csv").open() as fh:
        labels = {int(row[1]) - 1: int(row[2]) for row in csv.reader(fh) if row[0] == clip}
    start = min(f for f, v in labels.items() if v == 0)
    lying = min(f for f, v in labels.items() if v == 1)
    return range(max(start - before, 0), lying + after), labels


def urfd_rgb_frames(clip: str, frames: range, step: int) -> list[np.ndarray]:
    """The RGB half (columns 320..640) of the wanted frames of a UR Fall camera-0 clip."""
    cap = cv2.VideoCapture(str(shared_file("data", "urfd", f"{clip}-cam0.mp4")))
    out = []
    try:
        for i in range(frames.stop):
            ok, img = cap.read()
            assert ok, f"{clip} ended at frame {i}"
            if i >= frames.start and (i - frames.start) % step == 0:
                out.append(np.ascontiguousarray(img[:, 320:640]))
    finally:
        cap.release()
    return out


@pytest.fixture(scope="module")
def movenet():
    from workers.pose.adapters import load_pose_model

    return load_pose_model("movenet", shared_file("models", "movenet_multipose.onnx"), threads=2)


def model_config(model) -> TrackerConfig:
    """The tracker the pose worker builds for ``model``."""
    high, low = model.track_thresholds
    return TrackerConfig(high_score=high, low_score=low)


def urfd_labels(clip: str) -> dict[int, int]:
    with shared_file("data", "urfd", "labels.csv").open() as fh:
        return {int(row[1]) - 1: int(row[2]) for row in csv.reader(fh) if row[0] == clip}


@pytest.fixture(scope="module")
def urfd_people(movenet):
    """Clip -> MoveNet's people in every frame of its RGB half, as the worker decodes them."""
    cache: dict[str, list[list[Person]]] = {}

    def people(clip: str) -> list[list[Person]]:
        if clip not in cache:
            n = len(urfd_labels(clip))
            cache[clip] = movenet.infer(urfd_rgb_frames(clip, range(n), 1))
        return cache[clip]

    return people


def test_state_round_trip_is_exact_at_every_frame_of_a_real_clip(movenet, urfd_people):
    """Invariant 4 for tracking: the pose worker killed after any frame k and resumed from the
    JSON state gives the same ids, keypoints and boxes as an undisturbed run."""
    frames, cfg = urfd_people("fall-01"), model_config(movenet)
    whole = Tracker(cfg)
    ref = run(whole, frames)
    assert sum(bool(up.people) for up in ref) > 0.8 * len(frames)
    for k in range(len(frames) + 1):
        first = Tracker(cfg)
        head = run(first, frames[:k])
        second = resumed(first.to_state(), cfg)
        assert_same_updates(ref, head + run(second, frames[k:]))
        assert json.dumps(second.to_state()) == json.dumps(whole.to_state())


@pytest.mark.parametrize("clip", ["fall-01", "fall-19"])
def test_the_fallen_person_keeps_a_skeleton(movenet, urfd_people, clip):
    """Frames labelled lying (1): the faller's track (the id given most in falling and lying
    frames) must hold a skeleton in most of them, under one id from before the fall. The old
    tracker (one person threshold, 0.2) lost them: 6 % and 0 % of these frames."""
    labels, frames = urfd_labels(clip), urfd_people(clip)
    ids = [[p.track_id for p in up.people] for up in run(Tracker(model_config(movenet)), frames)]
    down = [f for f in range(len(frames)) if labels[f] >= 0]
    lying = [f for f in down if labels[f] == 1]
    faller = Counter(i for f in down for i in ids[f]).most_common(1)[0][0]
    coverage = sum(faller in ids[f] for f in lying) / len(lying)
    old = [[p for p in people if p.score >= 0.2] for people in frames]
    old_ids = [[p.track_id for p in up.people] for up in run(Tracker(), old)]
    old_coverage = sum(bool(old_ids[f]) for f in lying) / len(lying)
    print(f"{clip}: lying coverage {coverage:.2f} (old {old_coverage:.2f}), ids {sorted(set(sum(ids, [])))}")
    assert coverage >= 0.8, f"the fallen person has a skeleton in {coverage:.0%} of the lying frames"
    assert {i for f in down for i in ids[f]} == {faller}  # one id through the fall ...
    assert faller in {i for f in range(min(down)) for i in ids[f]}  # ... given before it


@pytest.mark.parametrize("clip, step", [("fall-01", 1), ("fall-05", 2)], ids=["30fps", "15fps"])
def test_real_fall_keeps_one_id(movenet, clip, step):
    """One person walks, falls (~30 frames at 30 fps) and lies. A single track id must
    cover >= 80% of the frames with a detection, and the same id must be given before the
    fall (upright) and after it (falling / lying)."""
    frames, labels = urfd_window(clip)
    people = movenet.infer(urfd_rgb_frames(clip, frames, step))
    tracker = Tracker(model_config(movenet))
    ids: Counter = Counter()
    by_phase: dict[str, Counter] = {"upright": Counter(), "down": Counter()}
    detected = 0
    for f, found in zip(frames[::step], people):
        detected += bool(found)
        for p in tracker.update(found).people:
            ids[p.track_id] += 1
            by_phase["upright" if labels.get(f, -1) < 0 else "down"][p.track_id] += 1
    assert detected >= 0.5 * len(people), f"MoveNet found the person in only {detected}/{len(people)} frames"
    top, count = ids.most_common(1)[0]
    coverage = count / detected
    print(f"{clip} step {step}: {len(people)} frames, {detected} with a person, ids {dict(ids)}, "
          f"track {top} covers {coverage:.0%}")
    assert coverage >= 0.8, f"track {top} covers only {coverage:.0%}; ids {dict(ids)}"
    assert by_phase["upright"] and by_phase["down"], f"no track before or after the fall: {by_phase}"
    assert by_phase["upright"].most_common(1)[0][0] == top == by_phase["down"].most_common(1)[0][0]
