"""Daily activities as classes of their own: which clip gets which class, how its windows are
labelled, and the class weights that keep falling weighed against the rest as with 2 classes."""

from pathlib import Path

import numpy as np
import pytest

from workers.offline.stgcn import activities, fall
from workers.offline.stgcn.train import class_weights

SKELETONS = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "skeletons"
PENN = {"penn-0001": "baseball_pitch", "penn-0900": "pushup", "penn-1000": "squat", "penn-2000": "situp"}


@pytest.mark.parametrize("name, expected", [
    ("sfmm-S02A02T01", "bending"),  # picking up an object
    ("sfmm-S02A02T01~v1", "bending"),  # an extra virtual view of it
    ("sfmm-S02A01T02", ""),  # drinking
    ("sfmm-S30A09T01", "sitting"),  # sitting down and standing up
    ("sfmm-S02A08T03", "sitting"),  # the Timed-Up-and-Go walk: from a chair and back
    ("sfmm-S02A12T03", ""),  # a fall clip name: falls are never an activity (see assign)
    ("ucla-a01_s01_e00_v01", "bending"),
    ("ucla-a03_s02_e01_v03", "bending"),  # dropping trash
    ("ucla-a04_s01_e00_v01", ""),  # walking around
    ("ucla-a06_s10_e02_v02", "sitting"),
    ("ucla-a11_s01_e00_v01", ""),  # throwing: a11 must not match a01's pattern
    ("upfall-A09-S01-T1-C1", "bending"),
    ("upfall-A08-S01-T2-C2", "sitting"),
    ("upfall-A11-S01-T3-C1", "on-floor"),
    ("upfall-A01-S01-T1-C1", ""),
    ("penn-0900", "on-floor"),
    ("penn-2000", "on-floor"),
    ("penn-1000", "sitting"),
    ("penn-0001", ""),
    ("walking", ""),
])
def test_activity_of(name, expected):
    assert activities.activity_of(name, PENN) == expected


def test_assign_leaves_fall_clips_out():
    clips = [fall.Clip("upfall-A09-S01-T1-C1", [], 18.0),
             fall.Clip("sfmm-S30A02T01", [], 30.0, fall=(10, 20), kind="fall")]
    count = activities.assign(clips)
    assert [c.activity for c in clips] == ["bending", ""]
    assert count == {"bending": 1, "other": 1}


def test_penn_actions_are_read_from_the_set():
    if not (SKELETONS / "pennaction" / "clips.csv").is_file():
        pytest.skip(f"{SKELETONS}/pennaction/clips.csv is absent (../shared/data/skeletons)")
    penn = activities.read_penn_actions(SKELETONS)
    found = {a: sum(activities.activity_of(n, penn) == a for n in penn) for a in activities.ACTIVITIES}
    assert found["on-floor"] > 200 and found["sitting"] > 200 and found["bending"] == 0
    assert activities.read_penn_actions(SKELETONS / "nowhere") == {}


@pytest.mark.parametrize("label, activity, expected", [
    (fall.UPRIGHT, "bending", "bending"),
    (fall.UPRIGHT, "", "not-falling"),
    (fall.UPRIGHT, "unknown", "not-falling"),
    (fall.FALLING, "", "falling"),
    (fall.LYING, "", "not-falling"),
])
def test_window_classes_with_activities(label, activity, expected):
    assert activities.CLASSES[fall.to_class(label, activities.CLASSES, activity)] == expected
    assert fall.to_class(label, fall.CLASSES_2, activity) == int(expected == "falling")
    assert fall.to_class(fall.IGNORE, activities.CLASSES, activity) == fall.IGNORE


def test_binary_class_weights_keep_falling_against_the_rest():
    labels = np.array([0] * 60 + [1] * 10 + [2] * 20 + [4] * 10)  # class 3 absent
    w = class_weights(labels, 5, "binary")
    total = np.bincount(labels, minlength=5) * w
    assert total[1] == pytest.approx(total[[0, 2, 3, 4]].sum())  # half the weight each
    assert w[0] == w[2] == w[4]  # every not-falling window alike
    two = np.array([0] * 90 + [1] * 10)
    assert np.allclose(class_weights(two, 2, "binary"), class_weights(two, 2, "balanced"))
    with pytest.raises(ValueError, match="class_weight"):
        class_weights(labels, 5, "other")
