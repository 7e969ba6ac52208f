"""The web page's pure parts: labels, alert banners, pairing, merging events, health."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shared.schemas import Event, Frame, Skeletons
from shared.skeleton import Person, box_from_keypoints
from workers.web import view
from tests.conftest import shared_path


def _event(camera="cam-1", track=1, label="falling", frame_end=100, emitted=1000.0) -> Event:
    return Event(camera, track, label, 1, 0.9, frame_end - 47, frame_end, 1.0, 2.0, "fall", emitted)


def _person(track: int, x: float = 100.0) -> Person:
    kp = np.zeros((18, 3), np.float32)
    kp[:, 0] = x + np.arange(18) * 2
    kp[:, 1] = 40 + np.arange(18) * 9
    kp[:, 2] = 0.9
    return Person(kp, box_from_keypoints(kp), 0.9, track)


@pytest.mark.parametrize("fields, expected", [
    ({b"track_id": b"3", b"label": b"falling", b"score": b"0.8100", b"frame_end": b"47",
      b"frame_start": b"0"}, view.Score(3, "falling", 0.81, 47)),
    ({"track_id": "3", "label": "x", "score": "0.5", "frame_end": "1"}, view.Score(3, "x", 0.5, 1)),
    ({b"track_id": b"3", b"label": b"falling", b"frame_end": b"47"}, None),  # no score
    ({b"track_id": b"three", b"label": b"a", b"score": b"0.5", b"frame_end": b"1"}, None),
    ({b"track_id": b"1", b"label": b"a", b"score": b"nan", b"frame_end": b"1"}, None),
])
def test_parse_score(fields, expected):
    assert view.parse_score(fields) == expected


@pytest.mark.parametrize("seq, tracks, expected", [
    (200, [1, 2], {1: ("falling", 0.9), 2: ("not-falling", 0.7)}),  # the newest of each track
    (200, [2], {2: ("not-falling", 0.7)}),                            # only the tracks shown
    (150, [1, 2], {1: ("not-falling", 0.6), 2: ("not-falling", 0.7)}),  # none from after the frame
    (10, [1, 2], {}),
])
def test_current_labels_take_each_shown_tracks_newest_window_up_to_the_frame(seq, tracks, expected):
    newest_first = [view.Score(1, "falling", 0.9, 180), view.Score(2, "not-falling", 0.7, 120),
                    view.Score(1, "not-falling", 0.6, 90), view.Score(2, "falling", 0.8, 60)]
    assert view.current_labels(newest_first, tracks, seq) == expected


@pytest.mark.parametrize("seq, fps, shown", [
    (100, 30.0, True),     # the frame its window ends at
    (249, 30.0, True),     # 149 frames later: within 5 s
    (251, 30.0, False),    # 151 frames later: over 5 s at 30 fps
    (251, 60.0, True),     # ... but within 5 s at 60 fps
    (99, 30.0, False),     # a frame before the window ended
    (200, 0.0, True),      # fps unknown: 30
])
def test_alert_banner_lasts_five_seconds_of_source_time(seq, fps, shown):
    events = [_event(frame_end=100), _event(camera="cam-2", frame_end=seq)]
    assert [e.camera for e in view.alerts_at(events, "cam-1", seq, fps)] == (["cam-1"] if shown else [])


def _frame(seq, w=320, h=240):
    return Frame("cam-1", seq, 1.0, w, h, b"\xff\xd8\xff\xd9")


def _skel(seq, w=320, h=240):
    return Skeletons("cam-1", seq, 1.0, w, h, (_person(1),), "movenet")


@pytest.mark.parametrize("frame, skel, drawn", [
    (_frame(10), _skel(10), True),
    (_frame(25), _skel(10), True),          # 15 frames behind: drawn
    (_frame(26), _skel(10), False),         # 16 behind: too far
    (_frame(10), _skel(26), False),
    (_frame(10), _skel(10, w=640), False),  # another size (a restarted producer with --width)
    (_frame(10), None, False),
])
def test_skeletons_are_drawn_only_on_a_frame_close_to_theirs(frame, skel, drawn):
    assert bool(view.people_for(frame, skel)) == drawn


def test_render_view_draws_skeletons_ids_labels_and_the_banner_on_a_real_frame():
    cap = cv2.VideoCapture(str(shared_path("data", "urfd", "fall-01-cam0.mp4")))
    ok, image = cap.read()
    cap.release()
    assert ok
    image = np.ascontiguousarray(image[:, 320:640])
    person = _person(7, x=150)
    plain = cv2.imdecode(np.frombuffer(view.render_view(image, [], {}, []), np.uint8), cv2.IMREAD_COLOR)
    drawn = cv2.imdecode(np.frombuffer(view.render_view(image, [person], {7: ("falling", 0.93)},
                                                        [_event(track=7)]), np.uint8), cv2.IMREAD_COLOR)
    assert plain.shape == drawn.shape == image.shape
    diff = np.abs(drawn.astype(int) - plain.astype(int)).sum(axis=2) > 60
    x, y = int(person.keypoints[1, 0]), int(person.keypoints[1, 1])
    assert diff[y - 2:y + 3, x - 2:x + 3].any()  # a joint
    assert diff[:18].mean() > 0.5  # the alert banner across the top
    assert diff[18:, :140].mean() < 0.05  # left of the person: untouched


def test_merge_events_keeps_one_row_per_id_newest_first_and_prefers_the_historys_snapshot():
    a, b, c = (view.event_row(_event(frame_end=n, emitted=t)) for n, t in ((10, 5.0), (20, 7.0), (30, 6.0)))
    stored = [{**b, "snapshot": f"/snapshots/{b['id']}.jpg"}, {**c, "snapshot": None}]
    merged = view.merge_events(stored, [a, b, {**c, "snapshot": "/snapshots/x.jpg"}], limit=10)
    assert [r["id"] for r in merged] == [b["id"], c["id"], a["id"]]
    assert merged[0]["snapshot"] == f"/snapshots/{b['id']}.jpg"
    assert merged[1]["snapshot"] == "/snapshots/x.jpg"  # the history has none: the stream's stays
    assert [r["id"] for r in view.merge_events(stored, [a], limit=2)] == [b["id"], c["id"]]


@pytest.mark.parametrize("row, since, camera, label, ok", [
    ({"emitted_at": 5.0, "camera": "a", "label": "falling"}, None, None, None, True),
    ({"emitted_at": 5.0, "camera": "a", "label": "falling"}, 5.0, "a", "falling", True),
    ({"emitted_at": 5.0, "camera": "a", "label": "falling"}, 5.1, None, None, False),
    ({"emitted_at": 5.0, "camera": "a", "label": "falling"}, None, "b", None, False),
    ({"emitted_at": 5.0, "camera": "a", "label": "falling"}, None, None, "fallen", False),
])
def test_event_filters(row, since, camera, label, ok):
    assert view.matches(row, since, camera, label) is ok


def test_health_summary_ages_heartbeats_and_names_unowned_cameras():
    status = {"workers": [{"worker": "pose-1", "stage": "pose", "at": 98.5}, {"stage": "producer"}],
              "cameras": {"a": {"pose_owner": "pose-1", "action_owner": "action-1"},
                          "b": {"pose_owner": "pose-1", "action_owner": ""}},
              "events": 3, "dead_letters": 0,
              "metrics": {"pose-1": {"url": "http://h:9100/metrics", "samples": {"x": 1.0}}}}
    h = view.health_summary(status, now=100.0)
    assert [w["age_s"] for w in h["workers"]] == [1.5, 0.0]
    assert h["metrics"] == {"pose-1": "http://h:9100/metrics"}  # where, not the samples
    assert h["unowned_cameras"] == ["b"] and h["ok"] is False
    status["cameras"]["b"]["action_owner"] = "action-1"
    assert view.health_summary(status, 100.0)["ok"] is True
    assert view.health_summary({**status, "dead_letters": 2}, 100.0)["ok"] is False
