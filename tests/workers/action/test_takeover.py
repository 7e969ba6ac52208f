"""Exact takeover, pure: for every cut point of a real clip, a second core rebuilt from the
processed tail and the first core's state continues exactly as an undisturbed core does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.schemas import EndOfStream
from tests.workers.action.realclips import shipped_classifier, urfd_skeletons
from workers.action.core import ActionCore, select_tail
from workers.action.rules import default_rules

STRIDE, MIN_FRAMES = 7, 20


class Memo:
    """The shipped classifier, each distinct window classified once (it is deterministic)."""

    def __init__(self, classifier) -> None:
        self.inner, self.card, self.cache = classifier, classifier.card, {}

    def classify(self, batch, lengths, sizes):
        out = []
        for x, n, size in zip(batch, lengths, sizes):
            key = (x[:, :n].tobytes(), n, tuple(size))
            if key not in self.cache:
                self.cache[key] = self.inner.classify(x[None], lengths=[n], sizes=[size])[0]
            out.append(self.cache[key])
        return np.stack(out)


@pytest.fixture(scope="module")
def clip():
    frames, _ = urfd_skeletons("fall-01")
    return [*frames, EndOfStream("cam", len(frames))]


@pytest.fixture(scope="module")
def memo():
    return Memo(shipped_classifier())


RULES = {  # (threshold, consecutive, cooldown_s, fallen_after_s)
    "default-like": (0.5, 1, 10.0, 1.0),  # a falling event, then fallen while the track is gone
    "streaks-and-cooldowns": (0.004, 2, 0.6, 0.5),  # many events: streaks, cooldowns cross cuts
}


def make_core(memo, rules) -> ActionCore:
    threshold, consecutive, cooldown, fallen_after = RULES[rules]
    return ActionCore(memo, default_rules(memo.card.labels, threshold=threshold, consecutive=consecutive,
                                          cooldown_s=cooldown, clock=lambda: 0.0),
                      stride=STRIDE, min_frames=MIN_FRAMES, fallen_after_s=fallen_after)


def run(core, msgs, batch):
    """(refs, events) of ``msgs`` processed in batches of ``batch``."""
    refs, events = [], []
    for i in range(0, len(msgs), batch):
        result = core.process(msgs[i:i + batch])
        refs += [(r.track_id, r.frame_end, r.frames, r.data.tobytes()) for r in result.refs]
        events += [(e.id, e.label, e.frame_start, e.frame_end, e.ts_end, e.score) for e in result.events]
    return refs, events


@pytest.mark.parametrize("rules", list(RULES))
def test_takeover_at_every_cut_continues_exactly(clip, memo, rules):
    want_refs, want_events = run(make_core(memo, rules), clip, batch=4)
    assert len(want_refs) >= 15 and want_events, "the clip must hold windows and events"
    if rules == "default-like":
        assert [e[1] for e in want_events] == ["falling", "fallen"]
    else:
        assert len(want_events) >= 5
    for k in range(len(clip) + 1):
        a = make_core(memo, rules)
        refs_a, events_a = run(a, clip[:k], batch=5)
        state = a.state("cam")
        json.loads(state)  # it is JSON
        b = make_core(memo, rules)
        b.rebuild("cam", select_tail(clip[:k], b.tail_seconds()), state)
        refs_b, events_b = run(b, clip[k:], batch=3)
        assert refs_a + refs_b == want_refs, f"windows differ after a takeover at {k}"
        assert events_a + events_b == want_events, f"events differ after a takeover at {k}"


def test_without_the_state_a_takeover_differs(clip, memo):
    """The test above can fail: rebuilding from the tail alone (no state) changes windows."""
    want_refs, _ = run(make_core(memo, "default-like"), clip, batch=4)
    differs = 0
    for k in range(40, len(clip), 3):
        a = make_core(memo, "default-like")
        refs_a, _ = run(a, clip[:k], batch=5)
        b = make_core(memo, "default-like")
        b.rebuild("cam", select_tail(clip[:k], b.tail_seconds()), None)
        refs_b, _ = run(b, clip[k:], batch=3)
        differs += refs_a + refs_b != want_refs
    assert differs > 0


def test_a_short_tail_is_caught(clip, memo):
    """The tail must cover the window's seconds: one too short changes the data."""
    k = 100
    want_refs, _ = run(make_core(memo, "default-like"), clip, batch=4)
    a = make_core(memo, "default-like")
    refs_a, _ = run(a, clip[:k], batch=5)
    b = make_core(memo, "default-like")
    b.rebuild("cam", clip[k - 10:k], a.state("cam"))
    refs_b, _ = run(b, clip[k:], batch=3)
    assert refs_a + refs_b != want_refs


@pytest.mark.parametrize("state", ["not json", '{"v": 99}', '{"v": 1}', None])
def test_an_unusable_state_falls_back_to_the_tail(clip, memo, state, caplog):
    core = make_core(memo, "default-like")
    core.rebuild("cam", select_tail(clip[:80], core.tail_seconds()), state)
    assert core.windows["cam"].tracks  # rebuilt from the tail
    refs, _ = run(core, clip[80:], batch=4)
    assert refs
