"""The still-down alert: `fallen` after a `falling` event when the track does not get up."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from shared.schemas import EndOfStream
from shared.skeleton import Person
from tests.workers.action.realclips import shipped_classifier, urfd_skeletons
from workers.action.core import ActionCore
from workers.action.rules import default_rules
from workers.action.still_down import LYING, UPRIGHT, StillDown, posture, torso_angle


def body(angle_deg: float, length: float = 60.0, limbs: float = 20.0) -> Person:
    """A stick figure: hips at (200, 200), the torso ``angle_deg`` from vertical, legs along
    the torso's line below the hips."""
    kp = np.zeros((18, 3), np.float32)
    a = math.radians(angle_deg)
    up = np.array([math.sin(a), -math.cos(a)])
    hip = np.array([200.0, 200.0])
    side = np.array([-up[1], up[0]]) * 8
    for j, p in {8: hip + side, 11: hip - side, 2: hip + length * up + side, 5: hip + length * up - side,
                 1: hip + length * up, 0: hip + (length + limbs) * up,
                 10: hip - 2 * length * up + side, 13: hip - 2 * length * up - side}.items():
        kp[j] = (*p, 0.8)
    return Person(kp, np.zeros(4, np.float32), 0.9, 1)


@pytest.mark.parametrize("angle, want", [
    (0, UPRIGHT), (20, UPRIGHT), (40, None), (50, LYING), (90, LYING), (-90, LYING), (160, LYING),
])
def test_posture_from_torso_angle(angle, want):
    assert posture(body(angle)) == want


def test_posture_needs_joints():
    kp = np.zeros((18, 3), np.float32)
    kp[0] = (10, 10, 0.9)
    assert posture(Person(kp, np.zeros(4, np.float32), 0.5, 1)) is None
    assert torso_angle(kp) is None


def test_a_flat_wide_skeleton_without_a_torso_is_lying():
    kp = np.zeros((18, 3), np.float32)
    kp[[0, 10, 13]] = [(10, 100, 0.9), (150, 110, 0.9), (150, 120, 0.9)]  # head and feet level
    assert posture(Person(kp, np.zeros(4, np.float32), 0.5, 1)) == LYING


def frames_at(watch: StillDown, start_seq: int, start_ts: float, n: int, pose, fps: float = 10.0):
    out = []
    for i in range(n):
        out += watch.observe("cam", start_seq + i, start_ts + i / fps, {} if pose is None else {1: pose})
    return out


@pytest.mark.parametrize("poses, want_fallen", [
    ([(LYING, 30)], True),  # stays down
    ([(None, 30)], True),  # vanishes there (not detected)
    ([(LYING, 5), (UPRIGHT, 5), (LYING, 20)], True),  # half a second up is not getting up
    ([(LYING, 5), (UPRIGHT, 11)], False),  # up for a second: gets up
    ([(UPRIGHT, 11), (None, 30)], False),  # got up and left
])
def test_still_down_watch(poses, want_fallen):
    watch = StillDown(fallen_after_s=2.5, getup_s=1.0)
    watch.arm("cam", 1, seq=9, ts=0.9)
    seq, got = 10, []
    for pose, n in poses:
        got += frames_at(watch, seq, seq / 10, n, pose)
        seq += n
    got += frames_at(watch, seq, seq / 10, 30, None)  # time goes on
    assert bool(got) == want_fallen
    if got:
        (down,) = got
        assert down.ts - down.armed_ts >= 2.5 and down.armed_seq == 9
    assert watch.watching("cam") == []


def test_the_watch_survives_a_takeover():
    a = StillDown(2.0)
    a.arm("cam", 1, 0, 0.0)
    frames_at(a, 1, 0.1, 5, UPRIGHT)  # an upright run in progress
    b = StillDown(2.0)
    b.load("cam", a.state("cam"))
    assert frames_at(a, 6, 0.6, 30, LYING) == frames_at(b, 6, 0.6, 30, LYING) != []


def core(fallen_after_s: float = 1.0) -> ActionCore:
    clf = shipped_classifier()
    rules = default_rules(clf.labels, threshold=0.5, consecutive=1, cooldown_s=10.0, clock=lambda: 0.0)
    return ActionCore(clf, rules, stride=15, min_frames=32, fallen_after_s=fallen_after_s)


def test_real_fall_then_fallen_while_lying():
    """fall-01 (real MoveNet skeletons): `falling`, then `fallen` in the frames labelled lying."""
    frames, labels = urfd_skeletons("fall-01")
    events = core().process([*frames, EndOfStream("cam", len(frames))]).events
    assert [e.label for e in events] == ["falling", "fallen"], events
    falling, fallen = events
    assert fallen.frame_start == falling.frame_end and fallen.ts_end - falling.ts_end >= 1.0
    assert labels[fallen.frame_end] == 1 and fallen.track_id == falling.track_id
    assert fallen.label_index == -1 and fallen.id != falling.id


def test_a_track_that_gets_up_raises_no_fallen():
    """The same real fall, then the person stands again (their upright skeleton of before the
    fall) for four seconds, beyond fallen_after_s: nothing more is raised; lying on instead
    (their last lying skeleton) raises `fallen`."""
    frames, labels = urfd_skeletons("fall-01")
    cut = max(f.seq for f in frames if f.people and labels[f.seq] == 0) + 1
    standing = next(f for f in frames if f.people and labels[f.seq] == -1)
    lying = [f for f in frames[:cut] if f.people and posture(f.people[0]) == LYING][-1]
    for then, want in ((standing, []), (lying, ["fallen"])):
        more = [dataclasses.replace(then, seq=cut + i, ts=(cut + i) / 30) for i in range(120)]
        events = core(3.0).process([*frames[:cut], *more, EndOfStream("cam", cut + 120)]).events
        assert [e.label for e in events] == ["falling", *want]


def test_no_fallen_rule_no_watch():
    clf = shipped_classifier()
    c = ActionCore(clf, default_rules(clf.labels, alert=("falling",), threshold=0.5, consecutive=1),
                   stride=15, min_frames=32, fallen_after_s=1.0)
    frames, _ = urfd_skeletons("fall-01")
    assert [e.label for e in c.process(list(frames)).events] == ["falling"]


def test_posture_on_real_labelled_frames():
    """On fall-01's skeletons: no upright-labelled frame is called lying, and the lying frames
    with a skeleton are (the figures over all of URFD are in workers/action/still_down.py)."""
    frames, labels = urfd_skeletons("fall-01")
    seen = [(labels[f.seq], posture(f.people[0])) for f in frames if f.people]
    assert sum(p == UPRIGHT for lab, p in seen if lab == -1) >= 0.95 * sum(lab == -1 for lab, _ in seen)
    assert all(p != LYING for lab, p in seen if lab == -1)
    assert all(p == LYING for lab, p in seen if lab == 1)
