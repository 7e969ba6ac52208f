from __future__ import annotations

import pytest

from tests.workers.history.history_helpers import BACKENDS, database_url
from workers.history.store import EventStore


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path, clock):
    """An empty EventStore on each backend (SQLite file; PostgreSQL schema of its own)."""
    with database_url(request.param, tmp_path) as url:
        s = EventStore(url, tmp_path / "snapshots", clock=clock)
        yield s
        s.close()
