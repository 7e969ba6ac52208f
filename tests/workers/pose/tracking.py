"""Helpers of the tracker tests: running a tracker over frames, resuming it from its state,
comparing two runs."""

from __future__ import annotations

import json

import numpy as np

from workers.pose.tracker import Tracker, TrackerConfig, TrackUpdate


def run(tracker: Tracker, frames) -> list[TrackUpdate]:
    return [tracker.update(people) for people in frames]


def resumed(state: dict, config: TrackerConfig) -> Tracker:
    """A tracker resumed from ``state`` after a JSON round trip (as a takeover does)."""
    return Tracker.from_state(json.loads(json.dumps(state)), config)


def assert_same_updates(a: list[TrackUpdate], b: list[TrackUpdate]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.ended == y.ended
        assert [(p.track_id, p.score) for p in x.people] == [(p.track_id, p.score) for p in y.people]
        for p, q in zip(x.people, y.people):
            np.testing.assert_array_equal(p.keypoints, q.keypoints)
            np.testing.assert_array_equal(p.box, q.box)
