"""``actionstream events`` from the history (and from the stream when there is none)."""

from __future__ import annotations

import json
import time

import pytest

from shared import codec, keys
from tests.workers.history.history_helpers import make_event
from workers.console.cli import main
from workers.history.query import parse_duration
from workers.history.store import EventStore, HistoryError


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1w", 604800), ("1.5h", 5400),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "1y", "1h30m", "soon"])
def test_bad_durations_are_refused(text):
    with pytest.raises(HistoryError, match="expected a duration"):
        parse_duration(text)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTIONSTREAM_DATA_DIR", str(tmp_path))
    for name in ("ACTIONSTREAM_HISTORY_URL", "ACTIONSTREAM_SNAPSHOTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_events_queries_the_history(data_dir, capsys):
    now = time.time()
    store = EventStore(f"sqlite:///{data_dir / 'actionstream.db'}")
    wanted = [make_event("cam-1", 1, "falling", 10, now - 600),
              make_event("cam-1", 2, "falling", 20, now - 60)]
    for e in [*wanted, make_event("cam-1", 3, "falling", 5, now - 7200),  # too old
              make_event("cam-2", 1, "falling", 30, now), make_event("cam-1", 4, "fallen", 40, now)]:
        store.add(e, None)
    store.close()
    assert main(["events", "--since", "1h", "--camera", "cam-1", "--label", "falling"]) == 0
    rows = _lines(capsys)
    assert [row["id"] for row in rows] == [e.id for e in wanted]  # oldest first
    assert rows[0]["snapshot"] is None and rows[0]["track_id"] == 1
    assert main(["events", "--limit", "1"]) == 0
    assert [row["frame_end"] for row in _lines(capsys)] == [40]  # the newest one


def test_events_without_a_history_reads_the_stream(data_dir, redis_url, r, capsys):
    event = make_event()
    r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(event)})
    assert main(["events", "--redis", redis_url]) == 0
    assert [row["id"] for row in _lines(capsys)] == [event.id]
    assert not (data_dir / "actionstream.db").exists()  # reading made no database


def test_history_filters_without_a_history_are_a_clear_error(data_dir, capsys):
    assert main(["events", "--since", "1h"]) == 2
    assert "there is none" in capsys.readouterr().err


def test_a_bad_since_is_a_clear_error(data_dir, capsys):
    EventStore(f"sqlite:///{data_dir / 'actionstream.db'}").close()
    assert main(["events", "--since", "yesterday"]) == 2
    assert "expected a duration" in capsys.readouterr().err
