"""Incidents: events of a (camera, track) -> new, update, ..., end after end_after_s quiet."""

from __future__ import annotations

import json

import pytest

from shared.schemas import Event
from workers.alerting.incidents import END, NEW, UPDATE, Incidents


def ev(label="falling", score=0.9, track=1, camera="cam-1", frame_end=47) -> Event:
    return Event(camera=camera, track_id=track, label=label, label_index=1, score=score, frame_start=0,
                 frame_end=frame_end, ts_start=0.0, ts_end=1.6, model="fall", emitted_at=100.0)


def run(steps, end_after_s=30.0):
    """``steps``: (now, event or None for a check of due ends); the changes, applied."""
    inc, out = Incidents(end_after_s), []
    for now, event in steps:
        changes = [inc.on_event(event, now)] if event is not None else inc.due(now)
        for change in changes:
            if change is not None:
                inc.apply(change)
                out.append(change)
    return inc, out


@pytest.mark.parametrize("steps,types", [
    ([(0, ev())], [NEW]),
    ([(0, ev()), (10, ev("fallen", 0.7, frame_end=347))], [NEW, UPDATE]),
    ([(0, ev()), (29.9, None)], [NEW]),                                    # not quiet long enough
    ([(0, ev()), (30, None)], [NEW, END]),
    ([(0, ev()), (20, ev("fallen", frame_end=347)), (45, None), (50, None)], [NEW, UPDATE, END]),
    ([(0, ev()), (0, ev(track=2))], [NEW, NEW]),                           # one incident per track
    ([(0, ev()), (0, ev(camera="cam-2"))], [NEW, NEW]),
    ([(0, ev()), (31, None), (40, ev(frame_end=900))], [NEW, END, NEW]),   # after the end: a new one
    ([(0, ev()), (5, ev())], [NEW]),                                       # a redelivered event
])
def test_incident_changes(steps, types):
    _, changes = run(steps)
    assert [c.type for c in changes] == types


def test_the_messages_carry_before_and_after():
    inc, (new, update, end) = run([(0, ev(score=0.6)), (10, ev("fallen", 0.95, frame_end=347)),
                                   (50, None)])
    first = json.loads(new.payload())
    assert first["type"] == "new" and first["before"] == first["after"]
    assert first["after"]["id"] == ev(score=0.6).id and first["after"]["end_time"] is None
    second = json.loads(update.payload())
    assert second["before"]["label"] == "falling" and second["after"]["label"] == "fallen"
    assert second["after"]["top_score"] == 0.95 and second["after"]["events"] == 2
    assert second["after"]["id"] == first["after"]["id"]                   # the same incident
    assert second["after"]["event"]["id"] == ev("fallen", frame_end=347).id
    last = json.loads(end.payload())
    assert last["type"] == "end" and last["after"]["end_time"] == 50 and last["before"]["end_time"] is None
    assert inc.open == {}


def test_counts_follow_the_latest_label():
    inc, _ = run([(0, ev()), (0, ev(track=2)), (5, ev("fallen", track=2, frame_end=347))])
    assert inc.count("cam-1", "falling") == 1 and inc.count("cam-1", "fallen") == 1
    assert inc.count("cam-2", "falling") == 0


def test_end_after_must_be_positive():
    with pytest.raises(ValueError, match="end_after_s"):
        Incidents(0)
