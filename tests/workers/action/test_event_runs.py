"""Event ids and runs, pure: a window's id holds the producer's run of the camera, so a
redelivered (or taken-over) window of one run gets the same id and the same frames of
another run (another source under the same camera id) another one."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from shared import codec
from shared.schemas import EndOfStream, Frame, Skeletons, event_id, run_id
from tests.workers.action.realclips import shipped_classifier, urfd_skeletons
from tests.workers.action.test_takeover import Memo
from workers.action.core import ActionCore, select_tail
from workers.action.rules import default_rules

RUN_A, RUN_B = run_id(1, "file|/videos/a.mp4|100|1"), run_id(1, "file|/videos/b.mp4|100|1")


def clip_of(run: str) -> list:
    frames, _ = urfd_skeletons("fall-01")
    return [*(dataclasses.replace(f, run=run) for f in frames), EndOfStream("cam", len(frames))]


@pytest.fixture(scope="module")
def memo():
    return Memo(shipped_classifier())


def make_core(memo) -> ActionCore:
    rules = default_rules(memo.card.labels, threshold=0.5, clock=lambda: 0.0)
    return ActionCore(memo, rules, stride=7, min_frames=20, fallen_after_s=1.0)


def events(core, msgs, batch=4) -> list[tuple]:
    out = []
    for i in range(0, len(msgs), batch):
        out += [(e.id, e.label, e.frame_end) for e in core.process(msgs[i:i + batch]).events]
    return out


def test_a_redelivered_window_of_one_run_has_its_id_and_another_run_another(memo):
    clip = clip_of(RUN_A)
    first = events(make_core(memo), clip)
    assert [label for _, label, _ in first] == ["falling", "fallen"]
    assert events(make_core(memo), clip, batch=9) == first  # redelivered, other batches: same ids
    k = 60  # a worker taking the camera over mid-window continues with the same ids
    a = make_core(memo)
    before = events(a, clip[:k])
    b = make_core(memo)
    b.rebuild("cam", select_tail(clip[:k], b.tail_seconds()), a.state("cam"))
    assert before + events(b, clip[k:]) == first

    other = events(make_core(memo), clip_of(RUN_B))
    assert [(label, end) for _, label, end in other] == [(label, end) for _, label, end in first]
    assert not {i for i, _, _ in other} & {i for i, _, _ in first}  # same frames, another run


def test_the_run_travels_on_frames_and_skeletons_and_old_messages_still_decode():
    skel = urfd_skeletons("fall-01")[0][50]
    with_run = dataclasses.replace(skel, run=RUN_A)
    assert codec.decode_skeletons(codec.encode_skeletons(with_run)).run == RUN_A
    assert "run" not in codec.encode_skeletons(skel)  # no run: the message as before
    assert codec.decode_skeletons(codec.encode_skeletons(skel)).run == ""
    frame = Frame("cam", 3, 1.5, 8, 8, b"\xff\xd8\xff\xe0jpeg", run=RUN_B)
    assert codec.decode_frame(codec.encode_frame(frame)).run == RUN_B
    bad = dict(codec.encode_frame(frame), run="x" * 65)
    with pytest.raises(codec.DecodeError, match="run"):
        codec.decode_frame(bad)


def test_ids_without_a_run_are_the_old_ones_and_runs_are_deterministic():
    assert event_id("cam-1", 1, "falling", 123) == hashlib.sha1(b"cam-1|1|falling|123").hexdigest()[:20]
    assert event_id("cam-1", 1, "falling", 123, RUN_A) != event_id("cam-1", 1, "falling", 123, RUN_B)
    assert run_id(1, "file|x") == run_id(1, "file|x") != run_id(2, "file|x")
    assert isinstance(Skeletons("c", 0, 0.0, 1, 1, (), "m").run, str)
