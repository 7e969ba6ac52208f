"""shared.backoff: the one capped, jittered exponential backoff (pure, no Redis)."""

import random

import pytest

from shared.backoff import backoff_delay, nominal_delay


@pytest.mark.parametrize("attempt, base, cap, nominal", [
    (0, 0.2, 10.0, 0.2),     # the stage loops' first retry
    (1, 0.2, 10.0, 0.4),
    (5, 0.2, 10.0, 6.4),
    (6, 0.2, 10.0, 10.0),    # 12.8 capped
    (50, 0.2, 10.0, 10.0),
    (0, 0.5, 30.0, 0.5),     # the producer reopening a lost source
    (5, 0.5, 30.0, 16.0),
    (6, 0.5, 30.0, 30.0),
    (0, 0.5, 0.5, 0.5),      # a fixed pause: cap == base
    (9, 0.5, 0.5, 0.5),
    (10**6, 0.2, 10.0, 10.0),  # no overflow however long Redis stays away
    (3, 0.0, 10.0, 0.0),
])
def test_nominal_delay_doubles_up_to_the_cap(attempt, base, cap, nominal):
    assert nominal_delay(attempt, base, cap) == pytest.approx(nominal)


@pytest.mark.parametrize("draw, factor", [(0.0, 0.5), (0.5, 1.0), (0.999, 1.499)])
@pytest.mark.parametrize("attempt, base, cap", [(0, 0.2, 10.0), (3, 0.2, 10.0), (9, 0.2, 10.0),
                                                (4, 0.5, 30.0)])
def test_the_jitter_scales_the_nominal_delay_by_half_to_one_and_a_half(attempt, base, cap, draw, factor):
    got = backoff_delay(attempt, base, cap, rng=lambda: draw)
    assert got == pytest.approx(nominal_delay(attempt, base, cap) * factor)


@pytest.mark.parametrize("attempt", range(12))
def test_random_delays_stay_within_bounds(attempt):
    rng = random.Random(attempt).random
    nominal = nominal_delay(attempt, 0.2, 10.0)
    for _ in range(200):
        assert nominal / 2 <= backoff_delay(attempt, 0.2, 10.0, rng=rng) < nominal * 1.5


def test_the_same_draws_give_the_same_delays():
    a, b = random.Random(7).random, random.Random(7).random
    assert [backoff_delay(n, 0.2, 10.0, rng=a) for n in range(10)] == \
           [backoff_delay(n, 0.2, 10.0, rng=b) for n in range(10)]


@pytest.mark.parametrize("attempt, base, cap", [(-1, 0.2, 10.0), (0, -0.2, 10.0), (0, 0.2, -1.0)])
def test_negative_inputs_are_refused(attempt, base, cap):
    with pytest.raises(ValueError, match="backoff needs"):
        backoff_delay(attempt, base, cap)
