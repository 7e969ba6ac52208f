"""The one capped, jittered exponential backoff every reconnect loop sleeps by (pure).

Attempt ``n`` (0 for the first retry) waits ``min(base * 2**n, cap)`` scaled by a jitter
factor drawn from ``[0.5, 1.5)``: a mean of the nominal delay, and processes that lost Redis
together do not come back in step.
"""

from __future__ import annotations

import random
from typing import Callable

MAX_DOUBLINGS = 1000  # 2.0 ** 1000 is still a float; any sane base is at its cap long before


def nominal_delay(attempt: int, base: float, cap: float) -> float:
    """``min(base * 2**attempt, cap)``: the delay before jitter; ValueError for a negative
    ``attempt``, ``base`` or ``cap``."""
    if attempt < 0 or base < 0 or cap < 0:
        raise ValueError(f"backoff needs attempt, base and cap >= 0 (got {attempt}, {base}, {cap})")
    return min(base * 2.0 ** min(attempt, MAX_DOUBLINGS), cap)


def backoff_delay(attempt: int, base: float, cap: float,
                  rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, 2, ...): the nominal delay
    ``min(base * 2**attempt, cap)`` times ``0.5 + rng()``, so within ``[nominal / 2,
    nominal * 3 / 2)`` for ``rng`` in ``[0, 1)``; ``rng`` injected for a deterministic test."""
    return nominal_delay(attempt, base, cap) * (0.5 + rng())
