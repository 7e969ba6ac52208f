import json
import logging

import numpy as np
import pytest

from shared.schemas import event_id
from workers.action.rules import Rule, Rules, default_rules
from workers.action.window import WindowRef

LABELS = ("walking", "falling", "sitting")


def ref(frame_end: int, track_id: int = 7, camera: str = "cam-1", fps: float = 30.0) -> WindowRef:
    """A window ending at ``frame_end``; its ts is source time (not wall time)."""
    start = max(0, frame_end - 299)
    n = frame_end - start + 1
    return WindowRef(camera, track_id, start, frame_end, 500 + start / fps, 500 + frame_end / fps,
                     n, n, np.zeros((3, n, 18, 2), np.float32))


def probs(falling: float) -> np.ndarray:
    rest = (1 - falling) / 2
    return np.array([rest, falling, rest], np.float32)


def run(rules: Rules, scores, stride: int = 15, track_id: int = 7):
    """Classifications every ``stride`` frames with these falling scores; event frame ends."""
    out = []
    for i, s in enumerate(scores):
        out += [e.frame_end for e in rules.decide(ref(100 + i * stride, track_id), probs(s),
                                                   LABELS, "fall-v1")]
    return out


@pytest.mark.parametrize("rule, scores, want", [
    # threshold reached at the 2nd classification: one event
    (Rule("falling", 0.5, 1, 0.0), [0.2, 0.6, 0.3], [115]),
    # the threshold is inclusive
    (Rule("falling", 0.5, 1, 0.0), [0.5], [100]),
    # consecutive=2: a single spike does not fire; two in a row do (at the second)
    (Rule("falling", 0.5, 2, 0.0), [0.9, 0.1, 0.9, 0.9], [145]),
    # consecutive=3 with an interruption: the streak restarts
    (Rule("falling", 0.5, 3, 0.0), [0.9, 0.9, 0.4, 0.9, 0.9, 0.9], [175]),
    # cooldown 9.9 s (297 frames at 30 fps), classifications every 15 frames (0.5 s)
    (Rule("falling", 0.5, 1, 9.9), [0.9] * 25, [100, 400]),
    # cooldown 0: every classification above the threshold fires
    (Rule("falling", 0.5, 1, 0.0), [0.9] * 3, [100, 115, 130]),
    # the streak goes on during the cooldown (0.9 s): the next event is right after it
    (Rule("falling", 0.5, 2, 0.9), [0.9] * 6, [115, 145, 175]),
    (Rule("falling", 0.95, 1, 0.0), [0.9] * 3, []),
])
def test_rule_table(rule, scores, want):
    assert run(Rules([rule]), scores) == want


def test_event_fields_and_deterministic_id():
    rules = Rules([Rule("falling", 0.5)], clock=lambda: 1234.5)
    (ev,) = rules.decide(ref(400), probs(0.8), LABELS, "fall-v1")
    assert (ev.camera, ev.track_id, ev.label, ev.label_index, ev.model) == \
        ("cam-1", 7, "falling", 1, "fall-v1")
    assert ev.score == pytest.approx(0.8)
    assert (ev.frame_start, ev.frame_end) == (101, 400)
    assert ev.ts_start == pytest.approx(500 + 101 / 30)
    assert ev.ts_end == pytest.approx(500 + 400 / 30)
    assert ev.emitted_at == 1234.5
    assert ev.id == event_id("cam-1", 7, "falling", 400)
    # a redelivered window decided by a fresh process gives the same event id
    fresh = Rules([Rule("falling", 0.5)], clock=lambda: 9999.0)
    (again,) = fresh.decide(ref(400), probs(0.8), LABELS, "fall-v1")
    assert again.id == ev.id


def test_cooldown_uses_source_time_not_the_clock():
    wall = iter(range(0, 10**6, 100))  # the wall clock races ahead
    rules = Rules([Rule("falling", 0.5, 1, 9.9)], clock=lambda: float(next(wall)))
    assert run(rules, [0.9] * 25) == [100, 400]


def test_state_is_per_camera_track_and_label():
    rules = Rules([Rule("falling", 0.5, 2, 60.0), Rule("sitting", 0.1, 1, 60.0)])
    assert rules.decide(ref(100, 1), probs(0.9), LABELS, "m") == []
    assert rules.decide(ref(100, 2), probs(0.9), LABELS, "m") == []  # another track: own streak
    evs = rules.decide(ref(115, 1), probs(0.9), LABELS, "m")
    assert [e.label for e in evs] == ["falling"]
    evs = rules.decide(ref(100, 1, camera="cam-2"), probs(0.7), LABELS, "m")
    assert [e.label for e in evs] == ["sitting"]  # falling needs 2 in a row on cam-2 too


def test_forget_frees_state():
    rules = Rules([Rule("falling", 0.5, 1, 60.0)])
    assert run(rules, [0.9], track_id=1) == [100]
    assert run(rules, [0.9], track_id=2) == [100]
    assert run(rules, [0.9], track_id=1) == []  # cooldown
    rules.forget("cam-1", 1)
    assert len(rules) == 1
    assert run(rules, [0.9], track_id=1) == [100]  # a forgotten track starts over
    rules.forget_camera("cam-1")
    assert len(rules) == 0


def test_low_scores_keep_no_state():
    rules = Rules([Rule("falling", 0.5)])
    for t in range(100):
        rules.decide(ref(100, t), probs(0.1), LABELS, "m")
    assert len(rules) == 0


def test_a_rule_for_an_unknown_label_is_skipped_with_one_warning(caplog):
    rules = Rules([Rule("jumping", 0.1), Rule("falling", 0.5)])
    with caplog.at_level(logging.WARNING, logger="workers.action.rules"):
        assert run(rules, [0.9, 0.9]) == [100]
    assert caplog.text.count("jumping") == 1


def test_probabilities_must_match_labels():
    with pytest.raises(ValueError, match="2 probabilities for 3 labels"):
        Rules([Rule("falling", 0.5)]).decide(ref(1), np.array([0.5, 0.5]), LABELS, "m")


@pytest.mark.parametrize("kwargs, error", [
    (dict(threshold=1.5), "threshold"),
    (dict(threshold=-0.1), "threshold"),
    (dict(threshold=0.5, consecutive=0), "consecutive"),
    (dict(threshold=0.5, cooldown_s=-1.0), "cooldown"),
    (dict(threshold=0.5, cooldown_s=float("nan")), "cooldown"),
])
def test_bad_rules(kwargs, error):
    with pytest.raises(ValueError, match=error):
        Rule("falling", **kwargs)


def test_duplicate_rules_are_refused():
    with pytest.raises(ValueError, match="falling"):
        Rules([Rule("falling", 0.5), Rule("falling", 0.7)])


@pytest.mark.parametrize("alert, want", [
    (("falling",), ["falling"]),
    (("falling", "sitting", "falling"), ["falling", "sitting"]),
    (("jumping",), []),
    ((), []),
])
def test_default_rules(alert, want):
    rules = default_rules(LABELS, alert, threshold=0.6, consecutive=2, cooldown_s=5.0)
    assert [r.label for r in rules.rules] == want
    assert all((r.threshold, r.consecutive, r.cooldown_s) == (0.6, 2, 5.0) for r in rules.rules)


@pytest.mark.parametrize("labels, alert, want", [
    (LABELS, ("falling", "fallen"), [("falling", 0.6, 2), ("fallen", 0.0, 1)]),
    (("walking", "sitting"), ("falling", "fallen"), []),  # no falling: no fallen either
])
def test_fallen_is_derived_from_falling(labels, alert, want):
    rules = default_rules(labels, alert, threshold=0.6, consecutive=2, cooldown_s=5.0)
    assert [(r.label, r.threshold, r.consecutive) for r in rules.rules] == want


def test_a_derived_label_is_not_read_from_the_model_and_keeps_its_cooldown():
    rules = default_rules(LABELS, ("falling", "fallen"), threshold=0.5, consecutive=1, cooldown_s=5.0)
    assert [e.label for e in rules.decide(ref(100), probs(0.9), LABELS, "m")] == ["falling"]
    first = rules.derived("fallen", "cam-1", 7, 1.0, 100, 400, 503.3, 513.3, "m")
    assert first.label_index == -1 and first.id == event_id("cam-1", 7, "fallen", 400)
    assert rules.derived("fallen", "cam-1", 7, 1.0, 400, 500, 513.3, 516.6, "m") is None  # cooldown
    assert rules.derived("fallen", "cam-1", 7, 1.0, 400, 560, 513.3, 518.7, "m") is not None


def test_rule_state_moves_to_another_worker():
    a = default_rules(LABELS, ("falling",), threshold=0.5, consecutive=2, cooldown_s=9.9)
    b = default_rules(LABELS, ("falling",), threshold=0.5, consecutive=2, cooldown_s=9.9)
    scores = [0.9, 0.9, 0.9, 0.2, 0.9] + [0.9] * 20
    want = run(a, scores)
    a = default_rules(LABELS, ("falling",), threshold=0.5, consecutive=2, cooldown_s=9.9)
    got = run(a, scores[:3])
    b.load("cam-1", json.loads(json.dumps(a.state("cam-1"))))
    got += [e.frame_end for i, s in enumerate(scores[3:], start=3)
            for e in b.decide(ref(100 + i * 15), probs(s), LABELS, "fall-v1")]
    assert got == want and len(want) == 2
