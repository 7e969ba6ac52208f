import logging

import numpy as np
import pytest

from shared.schemas import Skeletons
from shared.skeleton import Person
from workers.action.window import CameraWindows, WindowRef, normalise, round_up, stack_windows

W, H = 640, 480


def person(track_id: int, cx: float = 100.0, cy: float = 100.0, conf: float = 0.9,
           tag: float = 0.0) -> Person:
    """A person around (cx, cy); joint j at (cx + j, cy + tag) so frames can be told apart."""
    kp = np.zeros((18, 3), np.float32)
    kp[:, 0] = cx + np.arange(18)
    kp[:, 1] = cy + tag
    kp[:, 2] = conf
    return Person(kp, np.array([cx - 10, cy - 10, cx + 10, cy + 10]), 0.9, track_id)


def frame(seq: int, *people: Person, camera: str = "cam-1", w: int = W, h: int = H) -> Skeletons:
    return Skeletons(camera, seq, 1000.0 + seq / 30, w, h, tuple(people), "test")


def feed(win: CameraWindows, seqs, make=lambda s: (person(1, tag=s),)) -> list[WindowRef]:
    """Push frames ``seqs``; every due window, in order."""
    out = []
    for s in seqs:
        win.push(frame(s, *make(s)))
        out.extend(win.due())
    return out


@pytest.mark.parametrize("x, y, c, want", [
    (0.0, 0.0, 0.5, (-0.5, -0.5, 0.5)),
    (320.0, 240.0, 1.0, (0.0, 0.0, 1.0)),
    (640.0, 480.0, 0.1, (0.5, 0.5, 0.1)),
    (160.0, 360.0, 0.7, (-0.25, 0.25, 0.7)),
    (160.0, 360.0, 0.0, (0.0, 0.0, 0.0)),  # confidence 0: the joint is at the origin
    (700.0, -10.0, 0.3, (700 / 640 - 0.5, -10 / 480 - 0.5, 0.3)),  # outside: not clipped
])
def test_normalise_follows_the_stgcn_contract(x, y, c, want):
    kp = np.zeros((18, 3), np.float32)
    kp[4] = (x, y, c)
    out = normalise(Person(kp, np.zeros(4), 1.0, 3), W, H)
    assert out.shape == (3, 18) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 4], want, atol=1e-7)
    assert (out[:, 0] == 0).all()  # all-zero joints stay zero


@pytest.mark.parametrize("num_person, others, want_slots", [
    (2, [], [1, None]),  # alone: slot 1 is zeros
    (2, [(2, 500), (3, 150)], [1, 3]),  # the nearest other person
    (2, [(-1, 130)], [1, -1]),  # an untracked person counts as a neighbour
    (1, [(2, 130)], [1]),
    (3, [(2, 500), (3, 150)], [1, 3, 2]),  # nearest first
    (3, [(2, 500)], [1, 2, None]),
])
def test_person_slots(num_person, others, want_slots):
    win = CameraWindows(window=8, stride=1, num_person=num_person, min_frames=1)
    tags = {1: 1.0, 2: 2.0, 3: 3.0, -1: 4.0}
    people = [person(1, 100, 100, tag=tags[1])]
    people += [person(t, cx, 100, tag=tags[t]) for t, cx in others]
    win.push(frame(0, *people))
    ref = next(r for r in win.due() if r.track_id == 1)
    assert ref.data.shape == (3, 1, 18, num_person)
    for m, tid in enumerate(want_slots):
        slot = ref.data[:, 0, :, m]
        if tid is None:
            assert (slot == 0).all()
        else:
            assert slot[1, 0] == pytest.approx((100 + tags[tid]) / H - 0.5)


@pytest.mark.parametrize("window, stride, min_frames, n, want", [
    # want: (frame_start, frame_end, frames) of every due window
    (8, 3, 4, 12, [(0, 3, 4), (0, 6, 7), (2, 9, 8)]),
    (8, 4, 8, 17, [(0, 7, 8), (4, 11, 8), (8, 15, 8)]),
    (4, 1, 2, 6, [(0, 1, 2), (0, 2, 3), (0, 3, 4), (1, 4, 4), (2, 5, 4)]),
    (300, 15, 32, 70, [(0, 31, 32), (0, 46, 47), (0, 61, 62)]),
    (8, 3, 9 - 1, 7, []),  # never long enough
])
def test_due_schedule(window, stride, min_frames, n, want):
    win = CameraWindows(window=window, stride=stride, min_frames=min_frames)
    refs = feed(win, range(n))
    assert [(r.frame_start, r.frame_end, r.frames) for r in refs] == want
    assert all(r.frames == r.valid == r.seen for r in refs)


def test_window_holds_the_last_frames_oldest_first_and_snapshots_are_frozen():
    win = CameraWindows(window=5, stride=2, min_frames=5)
    refs = feed(win, range(9))
    assert [r.frame_end for r in refs] == [4, 6, 8]
    for ref in refs:  # each window kept its own frames although the ring moved on
        tags = ref.data[1, :, 0, 0] + 0.5  # y / H of slot 0, joint 0
        seqs = range(ref.frame_start, ref.frame_end + 1)
        np.testing.assert_allclose(tags * H - 100, seqs, atol=1e-3)
        assert ref.ts_start == pytest.approx(1000 + ref.frame_start / 30)
        assert ref.ts_end == pytest.approx(1000 + ref.frame_end / 30)
        assert ref.camera == "cam-1" and ref.track_id == 1


@pytest.mark.parametrize("present, max_idle, want_frames, want_seen, want_ended", [
    # seqs the track is present in; a 3-step gap (seq 3..5) within max_idle is zero-filled
    ([0, 1, 2, 6, 7], 3, 8, 5, []),
    # the same gap beyond max_idle: the track is closed and starts a fresh window
    ([0, 1, 2, 6, 7], 2, 2, 2, [1]),
])
def test_missing_frames_become_zero_steps_or_close_the_track(present, max_idle, want_frames,
                                                             want_seen, want_ended):
    win = CameraWindows(window=10, stride=100, max_idle=max_idle, min_frames=1)
    for s in range(present[-1] + 1):
        win.push(frame(s, *([person(1, tag=s)] if s in present else [person(2)])))
    assert win.ended() == want_ended
    ref = [r for r in win.flush() if r.track_id == 1][0]
    assert (ref.frames, ref.seen, ref.frame_end) == (want_frames, want_seen, present[-1])
    steps_seen = np.abs(ref.data).reshape(3, ref.frames, -1).max(axis=(0, 2)) > 0
    assert steps_seen.sum() == want_seen
    assert ref.frame_end - ref.frame_start + 1 == ref.frames


def test_a_seq_gap_in_the_stream_is_zero_filled_with_interpolated_times():
    win = CameraWindows(window=10, stride=100, max_idle=5, min_frames=1)
    for s in (0, 1, 5):  # the stream skipped seqs 2..4
        win.push(frame(s, person(1, tag=s)))
    (ref,) = win.flush()
    assert (ref.frame_start, ref.frame_end, ref.frames, ref.seen) == (0, 5, 6, 3)
    assert (ref.data[:, 2:5] == 0).all() and (ref.data[:, 5] != 0).any()


def test_idle_tracks_are_closed_and_memory_stays_bounded():
    win = CameraWindows(window=300, stride=30, max_idle=10)
    for s in range(500):  # a new person every 5 frames, each staying 20 frames
        win.push(frame(s, *[person(t, tag=s) for t in range(max(0, s // 5 - 3), s // 5 + 1)]))
        win.due()
    ended = win.ended()
    assert len(win.tracks) <= 7  # 4 present + those within max_idle
    assert sorted(ended) == list(range(len(ended))) and len(ended) >= 90
    assert win.ended() == []  # reported once


@pytest.mark.parametrize("seqs, want_ends, want_ignored", [
    ([0, 1, 2, 2, 3], [0, 1, 2, 3], 1),  # a redelivered frame
    ([0, 1, 5, 3, 6], [0, 1, 5, 6], 1),  # an older frame after a gap
    ([10, 11, 0, 12], [10, 11, 12], 1),  # a restarted source without end-of-stream: ignored
])
def test_older_or_repeated_seqs_are_ignored_and_logged(seqs, want_ends, want_ignored, caplog):
    win = CameraWindows(window=10, stride=1, max_idle=10, min_frames=1)
    with caplog.at_level(logging.WARNING, logger="workers.action.window"):
        refs = feed(win, seqs)
    assert [r.frame_end for r in refs] == want_ends
    assert win.ignored == want_ignored
    assert "cam-1" in caplog.text and "ignored" in caplog.text


def test_flush_classifies_the_leftover_and_a_new_stream_starts_afresh():
    win = CameraWindows(window=10, stride=4, min_frames=3)
    refs = feed(win, range(9))
    assert [r.frame_end for r in refs] == [2, 6]
    (last,) = win.flush()
    assert (last.frame_start, last.frame_end) == (0, 8)
    assert win.flush() == []  # nothing left
    refs = feed(win, range(3))  # the source starts again at seq 0 (a replay)
    assert win.ended() == [1]
    assert [(r.frame_start, r.frame_end) for r in refs] == [(0, 2)]


def test_short_tracks_are_not_flushed():
    win = CameraWindows(window=10, stride=4, min_frames=5)
    feed(win, range(3))
    assert win.flush() == []


@pytest.mark.parametrize("w, h", [(0, 480), (640, 0), (-1, 480)])
def test_frames_without_a_size_are_ignored(w, h):
    win = CameraWindows(window=4, stride=1, min_frames=1)
    win.push(frame(0, person(1), w=w, h=h))
    assert win.due() == [] and win.ignored == 1 and not win.tracks


def test_frames_of_another_camera_are_refused():
    win = CameraWindows(camera="cam-1")
    with pytest.raises(ValueError, match="cam-2"):
        win.push(frame(0, person(1), camera="cam-2"))


def test_untracked_people_get_no_window():
    win = CameraWindows(window=4, stride=1, min_frames=1)
    win.push(frame(0, person(-1), person(-1, 300)))
    assert win.due() == [] and not win.tracks


@pytest.mark.parametrize("lengths, pad_to, want_t", [
    ([5], None, 8),
    ([8, 3], None, 8),
    ([9, 1], None, 12),
    ([300, 32], None, 300),
    ([5, 7], 300, 300),
])
def test_batch_pads_at_the_end(lengths, pad_to, want_t):
    win = CameraWindows(window=300, stride=1000, min_frames=1)
    refs = []
    for i, n in enumerate(lengths):
        w = CameraWindows(window=300, stride=1000, min_frames=n, camera="cam-1")
        refs.extend(feed(w, range(n), make=lambda s, i=i: (person(i + 1, tag=s + 1),)))
    x = win.batch(refs, pad_to=pad_to)
    assert x.shape == (len(lengths), 3, want_t, 18, 2) and x.dtype == np.float32
    for i, n in enumerate(lengths):
        np.testing.assert_array_equal(x[i, :, :n], refs[i].data)
        assert (x[i, :, n:] == 0).all()


def test_batch_refuses_a_pad_shorter_than_a_window():
    w = CameraWindows(window=40, stride=1000, min_frames=10)
    refs = feed(w, range(10))
    with pytest.raises(ValueError, match="shorter"):
        stack_windows(refs, pad_to=8)
    with pytest.raises(ValueError, match="no windows"):
        stack_windows([])


@pytest.mark.parametrize("n, want", [(1, 4), (4, 4), (5, 8), (299, 300), (300, 300)])
def test_round_up(n, want):
    assert round_up(n) == want


@pytest.mark.parametrize("kwargs", [dict(window=0), dict(stride=0), dict(num_person=0),
                                    dict(max_idle=-1), dict(window=10, min_frames=11),
                                    dict(min_frames=0)])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        CameraWindows(**kwargs)
