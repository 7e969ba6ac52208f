"""The per-camera tracker on synthetic scenes: crossing, falls, flicker, birth, death, two
thresholds, exact state (real clips: test_tracker_real.py)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from shared.skeleton import Person, box_from_keypoints
from tests.workers.pose.tracking import assert_same_updates, resumed, run
from workers.pose.tracker import Tracker, TrackerConfig, TrackUpdate, box_iou, similarity

# OpenPose-18 joints of a standing person, (dx, dy) in body heights from the feet centre.
TEMPLATE = np.array([
    (0.0, -0.88), (0.0, -0.78), (-0.10, -0.77), (-0.13, -0.62), (-0.14, -0.49), (0.10, -0.77),
    (0.13, -0.62), (0.14, -0.49), (-0.06, -0.45), (-0.06, -0.22), (-0.06, 0.0), (0.06, -0.45),
    (0.06, -0.22), (0.06, 0.0), (-0.02, -0.90), (0.02, -0.90), (-0.04, -0.89), (0.04, -0.89),
])


def person(x: float, feet_y: float = 300.0, height: float = 170.0, angle: float = 0.0,
           score: float = 0.9, keypoints: bool = True) -> Person:
    """A synthetic person standing on ``(x, feet_y)``, rotated by ``angle`` degrees about the
    feet (+90: lying, head to the right). ``keypoints=False``: box only, all joints missing."""
    a = np.radians(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    kp = np.concatenate([TEMPLATE @ rot.T * height + (x, feet_y), np.full((18, 1), 0.9)], axis=1)
    pad = 0.05 * height
    box = box_from_keypoints(kp) + np.array([-pad, -pad, pad, pad])
    return Person(kp if keypoints else np.zeros((18, 3)), box, score)


def ids_by_score(updates: list[TrackUpdate]) -> dict[float, Counter]:
    """Synthetic people carry distinct scores: score -> Counter of the ids it was given."""
    seen: dict[float, Counter] = {}
    for up in updates:
        for p in up.people:
            seen.setdefault(round(p.score, 3), Counter())[p.track_id] += 1
    return seen


# -- configuration and similarity ------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"min_hits": 0}, {"max_misses": -1}, {"match_threshold": 1.5}, {"oks_weight": -0.1},
    {"oks_kappa": 0.0}, {"velocity_damping": 2.0}, {"min_common_joints": 0},
    {"high_score": 0.2, "low_score": 0.3}, {"low_score": -0.1}, {"hold_ratio": 0.9},
])
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        TrackerConfig(**kwargs)


@pytest.mark.parametrize("shift, lo, hi", [
    (0.0, 0.999, 1.0),     # the same person
    (0.03, 0.75, 0.999),   # a small step
    (0.3, 0.0, 0.35),      # a third of a body height away: below the default gate
    (2.0, 0.0, 1e-3),      # another person
])
def test_similarity_falls_with_distance(shift, lo, hi):
    a, b = person(200.0), person(200.0 + shift * 170.0)
    sim = similarity(a.box[None], a.keypoints[None], b.box[None], b.keypoints[None], TrackerConfig())
    assert sim.shape == (1, 1) and lo <= sim[0, 0] <= hi


def test_similarity_is_iou_when_too_few_joints_are_shared():
    a, b = person(200.0), person(215.0)
    kp = b.keypoints.copy()
    kp[2:] = 0.0  # only nose and neck seen
    sim = similarity(a.box[None], a.keypoints[None], b.box[None], kp[None], TrackerConfig())
    assert sim[0, 0] == pytest.approx(box_iou(a.box[None], b.box[None])[0, 0])


def test_similarity_matrix_shape_and_order():
    tracks = [person(100.0), person(400.0), person(700.0)]
    dets = [person(702.0), person(98.0)]
    sim = similarity(np.stack([t.box for t in tracks]), np.stack([t.keypoints for t in tracks]),
                     np.stack([d.box for d in dets]), np.stack([d.keypoints for d in dets]), TrackerConfig())
    assert sim.shape == (3, 2)
    assert sim.argmax(axis=0).tolist() == [2, 0]
    assert sim[1].max() < 1e-3


# -- birth, death, flicker -------------------------------------------------------------

def test_empty_frames():
    tracker = Tracker()
    for up in run(tracker, [[]] * 5):
        assert up.people == [] and up.ended == ()
    assert tracker.state() == {"tracks": 0, "tentative": 0, "ids_issued": 0, "ended": 0, "frames": 5}


@pytest.mark.parametrize("min_hits", [1, 2, 3, 5])
def test_birth_after_min_hits(min_hits):
    tracker = Tracker(TrackerConfig(min_hits=min_hits))
    updates = run(tracker, [[person(100.0 + 4 * i)] for i in range(8)])
    first = next(i for i, up in enumerate(updates) if up.people)
    assert first == min_hits - 1
    assert all(up.people == [] for up in updates[:first])
    assert all([p.track_id for p in up.people] == [1] for up in updates[first:])


def test_tentative_track_dies_on_a_miss_without_using_an_id():
    tracker = Tracker(TrackerConfig(min_hits=3))
    pattern = [1, 1, 0, 1, 1, 0, 1, 1, 1, 1]
    updates = run(tracker, [[person(100.0)] if on else [] for on in pattern])
    assert [len(up.people) for up in updates] == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert updates[-1].people[0].track_id == 1
    assert all(up.ended == () for up in updates)


@pytest.mark.parametrize("max_misses", [0, 1, 5, 15])
def test_confirmed_track_survives_max_misses_and_keeps_its_id(max_misses):
    tracker = Tracker(TrackerConfig(max_misses=max_misses))
    frames = [[person(100.0)]] * 5 + [[]] * max_misses + [[person(100.0)]] * 2
    updates = run(tracker, frames)
    assert [p.track_id for p in updates[-1].people] == [1]
    assert all(up.ended == () for up in updates)


@pytest.mark.parametrize("max_misses", [0, 1, 5, 15])
def test_death_after_max_misses_frees_state_and_never_reuses_the_id(max_misses):
    tracker = Tracker(TrackerConfig(max_misses=max_misses))
    frames = [[person(100.0)]] * 5 + [[]] * (max_misses + 1) + [[person(100.0)]] * 3
    updates = run(tracker, frames)
    ended_at = [i for i, up in enumerate(updates) if up.ended]
    assert ended_at == [5 + max_misses] and updates[ended_at[0]].ended == (1,)
    assert updates[5 + max_misses + 1].people == []  # the newcomer is tentative again
    assert [p.track_id for p in updates[-1].people] == [2]
    assert tracker.state()["tracks"] == 1 and tracker.state()["ended"] == 1
    run(tracker, [[]] * (max_misses + 1))
    assert tracker.state() == {"tracks": 0, "tentative": 0, "ids_issued": 2, "ended": 2,
                               "frames": len(frames) + max_misses + 1}


@pytest.mark.parametrize("missing", [
    lambda i: i % 3 == 2,           # every 3rd frame
    lambda i: i % 2 == 1,           # every 2nd frame
    lambda i: i % 12 >= 6,          # bursts of 6 frames
], ids=["every-3rd", "every-2nd", "bursts-of-6"])
@pytest.mark.parametrize("speed", [0.0, 4.0, 10.0])
def test_flicker_keeps_the_id(missing, speed):
    tracker = Tracker()
    frames = [[person(100.0 + speed * i)] if i < 3 or not missing(i) else [] for i in range(60)]
    updates = run(tracker, frames)
    for i, up in enumerate(updates[2:], start=2):
        assert [p.track_id for p in up.people] == ([1] if frames[i] else [])
    assert tracker.state()["ids_issued"] == 1


@pytest.mark.parametrize("jitter", [15.0, 30.0])
def test_a_jittery_detection_before_a_gap_does_not_lose_a_standing_person(jitter):
    """One detection jumps sideways (a false velocity), then the person is missed for 6
    frames and reappears where they stood: the track must still take them back."""
    frames = [[person(300.0)]] * 6 + [[person(300.0 + jitter)]] + [[]] * 6 + [[person(300.0)]] * 3
    updates = run(Tracker(), frames)
    assert [p.track_id for p in updates[-1].people] == [1]
    assert updates[-3].people  # at once, not after a new birth


def test_many_people_come_and_go_with_bounded_state():
    tracker = Tracker(TrackerConfig(max_misses=5))
    seen: set[int] = set()
    for k in range(30):  # person k stands at its own place for 10 frames, then leaves
        for up in run(tracker, [[person(50.0 + 37 * (k % 20), 200.0 + 90 * (k % 3))]] * 10):
            seen.update(p.track_id for p in up.people)
        assert tracker.state()["tracks"] + tracker.state()["tentative"] <= 2
    run(tracker, [[]] * 6)
    assert seen == set(range(1, 31))
    assert tracker.state() == {"tracks": 0, "tentative": 0, "ids_issued": 30, "ended": 30, "frames": 306}


def test_finish_ends_every_track_and_ids_go_on():
    tracker = Tracker()
    run(tracker, [[person(100.0, score=0.91), person(500.0, score=0.92), person(900.0, score=0.93)]] * 3
            + [[person(100.0, score=0.91), person(500.0, score=0.92)]])
    assert tracker.finish() == (1, 2, 3)
    assert tracker.state()["tracks"] == 0 and tracker.state()["ended"] == 3
    updates = run(tracker, [[person(100.0)]] * 3)
    assert [p.track_id for p in updates[-1].people] == [4]


# -- two thresholds: weak detections only extend tracks -----------------------------------

TWO = TrackerConfig(high_score=0.5, low_score=0.1)  # hold: best score >= 0.625


@pytest.mark.parametrize("score", [0.1, 0.3, 0.49])
def test_a_weak_detection_never_starts_a_track(score):
    tracker = Tracker(TWO)
    updates = run(tracker, [[person(100.0 + 3 * i, score=score)] for i in range(20)])
    assert all(up.people == [] for up in updates)
    assert tracker.state() == {"tracks": 0, "tentative": 0, "ids_issued": 0, "ended": 0, "frames": 20}


def test_a_weak_detection_extends_a_confirmed_track():
    """A person seen clearly, then only weakly (lying on the floor): one id throughout, with
    the weak detections reported as they are."""
    frames = [[person(100.0, score=0.9)]] * 5 + [[person(100.0, angle=6.0 * i, score=0.2)] for i in range(15)]
    updates = run(Tracker(TWO), frames)
    assert all([p.track_id for p in up.people] == [1] for up in updates[2:])
    assert [up.people[0].score for up in updates[5:]] == [0.2] * 15


def test_below_the_floor_is_a_miss():
    tracker = Tracker(TWO)
    updates = run(tracker, [[person(100.0, score=0.9)]] * 5 + [[person(100.0, score=0.09)]] * 3)
    assert all(up.people == [] for up in updates[5:])
    assert tracker.state()["tracks"] == 1  # coasting: the id lives on


def test_a_weak_detection_does_not_confirm_a_tentative_track():
    tracker = Tracker(TWO)  # min_hits 3: two strong hits are not enough
    updates = run(tracker, [[person(100.0, score=0.9)]] * 2 + [[person(100.0, score=0.3)]] * 5)
    assert all(up.people == [] for up in updates)
    assert tracker.state()["ids_issued"] == 0


@pytest.mark.parametrize("peak, held", [(0.55, False), (0.62, False), (0.63, True), (0.9, True)])
def test_only_a_track_once_seen_clearly_is_held_by_weak_detections(peak, held):
    """A stray object scoring just above the birth threshold must not be kept alive by weak
    detections (a ghost); a person once seen clearly is."""
    frames = [[person(100.0, score=peak)]] * 5 + [[person(100.0, score=0.2)]] * 20
    updates = run(Tracker(TWO), frames)
    assert [bool(up.people) for up in updates[5:]] == [held] * 20


def test_unmatched_weak_detections_are_dropped():
    """A clear person and weak candidates elsewhere (background, duplicates far away): the
    weak ones never appear, however long they last."""
    frames = [[person(100.0, score=0.9), person(600.0, score=0.3), person(900.0, score=0.45)]] * 30
    tracker = Tracker(TWO)
    updates = run(tracker, frames)
    assert all([(p.track_id, p.score) for p in up.people] == [(1, 0.9)] for up in updates[2:])
    assert tracker.state()["tentative"] == 0


def test_a_strong_detection_is_preferred_and_weak_duplicates_dropped():
    frames = [[person(100.0, score=0.9)]] * 5 + [[person(104.0, score=0.3), person(101.0, score=0.8)]] * 5
    updates = run(Tracker(TWO), frames)
    assert all([(p.track_id, p.score) for p in up.people] == [(1, 0.8)] for up in updates[5:])


def test_coasting_follows_the_motion_model():
    """A walker (8 px/frame) is missed for 6 frames and comes back weakly where the motion
    model expects them, 56 px from where they were last seen: the same id, at once."""
    x = [100.0 + 8.0 * i for i in range(20)]
    frames = [[person(v, score=0.9)] for v in x[:10]] + [[]] * 6 + [[person(v, score=0.2)] for v in x[16:]]
    updates = run(Tracker(TWO), frames)
    assert [[p.track_id for p in up.people] for up in updates[16:]] == [[1]] * 4
    lost = run(Tracker(TrackerConfig(high_score=0.5, low_score=0.1, velocity_damping=0.0)), frames)
    assert all(up.people == [] for up in lost[16:])  # no motion model: too far to match


def test_one_threshold_is_the_old_tracker():
    """high == low: every detection above it may start a track, as before."""
    tracker = Tracker(TrackerConfig(high_score=0.2, low_score=0.2))
    frame = [person(100.0, score=0.9), person(500.0, score=0.2), person(800.0, score=0.19)]
    updates = run(tracker, [frame] * 4)
    assert [p.score for p in updates[-1].people] == [0.9, 0.2]


# -- exact state for takeovers ----------------------------------------------------------

def test_state_round_trip_at_every_frame_of_a_synthetic_scene():
    frames = crossing(5.0, 20.0, 6) + fall(10, 90.0, 3.0, bystander=True) + [[]] * 20
    frames = [[Person(p.keypoints, p.box, p.score * (0.3 if i % 4 == 0 else 1.0)) for p in f]
              for i, f in enumerate(frames)]  # weak detections now and then
    cfg = TrackerConfig(high_score=0.5, low_score=0.1)
    whole = Tracker(cfg)
    ref = run(whole, frames)
    for k in range(len(frames) + 1):
        first = Tracker(cfg)
        head = run(first, frames[:k])
        second = resumed(first.to_state(), cfg)
        assert_same_updates(ref, head + run(second, frames[k:]))
        assert json.dumps(second.to_state()) == json.dumps(whole.to_state())


@pytest.mark.parametrize("change", [
    lambda s: s.update(version=99), lambda s: s.pop("tracks"),
    lambda s: s["tracks"][0].update(box=[1, 2]), lambda s: s["tracks"][0].update(keypoints="x"),
    lambda s: s["tracks"][0].update(velocity=[float("nan"), 0]), lambda s: s["tracks"][0].pop("track_id"),
], ids=["version", "no-tracks", "short-box", "text", "nan", "no-id"])
def test_bad_state_is_a_clear_error(change):
    tracker = Tracker()
    run(tracker, [[person(100.0)]] * 4)
    state = json.loads(json.dumps(tracker.to_state()))
    change(state)
    with pytest.raises(ValueError, match="tracker state"):
        Tracker.from_state(state)


# -- crossing paths ----------------------------------------------------------------------

def crossing(speed: float, dy: float, occluded: int, n: int = 60) -> list[list[Person]]:
    """A (score 0.91) walks right, B (0.92) walks left; they meet at frame n/2, where B is
    hidden for ``occluded`` frames."""
    frames = []
    for i in range(n):
        t = i - n // 2
        a = person(500.0 + speed * t, 300.0, score=0.91)
        b = person(500.0 - speed * t, 300.0 + dy, score=0.92)
        frames.append([a] if abs(t) < occluded / 2 else [b, a])
    return frames


@pytest.mark.parametrize("occluded", [0, 6])
@pytest.mark.parametrize("dy", [0.0, 20.0])
@pytest.mark.parametrize("speed", [2.0, 5.0, 10.0])
def test_crossing_paths_keep_their_ids(speed, dy, occluded):
    tracker = Tracker()
    ids = ids_by_score(run(tracker, crossing(speed, dy, occluded)))
    assert set(ids) == {0.91, 0.92}
    assert len(ids[0.91]) == 1 and len(ids[0.92]) == 1, ids  # one id per person, throughout
    assert set(ids[0.91]) != set(ids[0.92])
    assert tracker.state()["ids_issued"] == 2


def test_result_is_sorted_by_id_and_carries_the_detection():
    tracker = Tracker(TrackerConfig(min_hits=1))
    frame = [person(900.0, score=0.5), person(100.0, score=0.6)]
    up = tracker.update(frame)
    up = tracker.update(frame[::-1])
    assert [p.track_id for p in up.people] == [1, 2]
    assert [p.score for p in up.people] == [0.5, 0.6]
    np.testing.assert_array_equal(up.people[0].keypoints, frame[0].keypoints)
    np.testing.assert_array_equal(up.people[0].box, frame[0].box)


def test_deterministic_and_independent_of_detection_order():
    rng = np.random.default_rng(7)
    starts, speeds = rng.uniform(100, 900, 4), rng.uniform(-6, 6, 4)
    frames = []
    for i in range(80):
        noise = rng.normal(0, 2, 4)
        frames.append([person(s + v * i + e, 300.0 + 40 * k, score=0.91 + 0.01 * k)
                       for k, (s, v, e) in enumerate(zip(starts, speeds, noise)) if rng.random() > 0.15])

    def signature(updates):
        return [[(p.track_id, p.score) for p in up.people] for up in updates]

    def seen_when(updates):  # person -> the frames it is returned in, ids aside
        return {round(p.score, 3): [i for i, u in enumerate(updates)
                                    if p.score in {q.score for q in u.people}]
                for up in updates for p in up.people}

    updates = run(Tracker(), frames)
    assert signature(updates) == signature(run(Tracker(), frames))
    assert all(len(c) == 1 for c in ids_by_score(updates).values())
    shuffled = run(Tracker(), [f[::-1] for f in frames])  # ids may be numbered otherwise
    assert all(len(c) == 1 for c in ids_by_score(shuffled).values())
    assert seen_when(updates) == seen_when(shuffled)


# -- falls: a tall box becomes a wide one ------------------------------------------------

def fall(duration: int, angle: float, walk: float, keypoints: bool = True,
         bystander: bool = False) -> list[list[Person]]:
    """Faller (score 0.91) walks ``walk`` px/frame for 12 frames, falls over ``duration``
    frames to ``angle`` degrees, lies for 15; an optional bystander (0.92) stands where the
    head lands."""
    frames, x = [], 400.0
    for i in range(12 + duration + 15):
        k = min(max(i - 12, 0) / duration, 1.0)
        x += walk if i < 12 else 0.0
        people = [person(x, angle=angle * k, score=0.91, keypoints=keypoints)]
        if bystander:
            people.append(person(x + np.sign(angle) * 200.0 + 12 * walk, score=0.92))
        frames.append(people)
    return frames


@pytest.mark.parametrize("duration, angle, walk, keypoints, bystander", [
    (15, 90.0, 0.0, True, False),
    (15, -90.0, 0.0, True, False),
    (10, 90.0, 3.0, True, False),
    (20, -85.0, 3.0, True, False),
    (5, 90.0, 6.0, True, False),     # 10 fps: the fall takes 5 frames
    (15, 90.0, 0.0, False, False),   # box only: no joints at all
    (10, 90.0, 0.0, False, False),
    (15, 90.0, 3.0, True, True),     # falling towards a bystander
    (8, -90.0, -3.0, True, True),
])
def test_fall_keeps_one_id(duration, angle, walk, keypoints, bystander):
    frames = fall(duration, angle, walk, keypoints, bystander)
    first, last = frames[0][0].box, frames[-1][0].box
    assert (first[3] - first[1]) > 2 * (first[2] - first[0])  # tall ...
    assert (last[2] - last[0]) > 2 * (last[3] - last[1])      # ... became wide
    tracker = Tracker()
    updates = run(tracker, frames)
    assert all(0.91 in {p.score for p in up.people} for up in updates[2:])  # seen every frame
    ids = ids_by_score(updates)
    assert list(ids[0.91]) == [1]
    assert len(ids.get(0.92, {})) <= 1
    assert tracker.state()["ids_issued"] == (2 if bystander else 1)
