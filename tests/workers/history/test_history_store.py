"""EventStore on SQLite and on the local PostgreSQL: one row per event id, filters, retention."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from shared.schemas import Event
from shared.settings import Settings
from tests.workers.history.history_helpers import BACKENDS, database_url, make_event
from workers.history.store import EventStore, HistoryError, history_location, store_exists

JPEG = b"\xff\xd8\xff\xe0 not really a picture \xff\xd9"


def test_the_same_event_twice_makes_one_row(store):
    event = make_event()
    assert store.add(event, JPEG) is True
    assert store.add(event, JPEG) is False
    assert store.add(dataclasses.replace(event, score=0.5), None) is False  # same id, redelivered
    assert store.count() == 1
    [row] = store.query()
    assert row["score"] == pytest.approx(0.9)  # the first one stays
    assert row["snapshot"] == f"/snapshots/{event.id}.jpg"
    assert store.snapshot_path(event.id).read_bytes() == JPEG


def test_a_row_keeps_every_event_field(store):
    event = make_event(camera="cam-7", track=12, frame_end=4321)
    store.add(event, None)
    [row] = store.query()
    expected = {f.name: getattr(event, f.name) for f in dataclasses.fields(Event)}
    assert {k: row[k] for k in expected} == expected
    assert row["snapshot"] is None
    assert store.snapshot_path(event.id) is None
    assert store.get(event.id) == row and store.get("nope") is None


def test_a_redelivery_with_its_picture_adds_the_picture(store):
    event = make_event()
    store.add(event, None)
    assert store.add(event, JPEG) is False
    assert store.query()[0]["snapshot"] == f"/snapshots/{event.id}.jpg"


EVENTS = [make_event("cam-1", 1, "falling", 10, 1000.0), make_event("cam-1", 2, "fallen", 20, 2000.0),
          make_event("cam-2", 1, "falling", 30, 3000.0), make_event("cam-2", 3, "falling", 40, 4000.0)]


@pytest.mark.parametrize("filters, frames", [
    ({}, [40, 30, 20, 10]),  # newest first
    ({"camera": "cam-1"}, [20, 10]),
    ({"label": "falling"}, [40, 30, 10]),
    ({"camera": "cam-2", "label": "falling"}, [40, 30]),
    ({"since": 2000.0}, [40, 30, 20]),
    ({"since": 2000.0, "until": 4000.0}, [30, 20]),
    ({"limit": 2}, [40, 30]),
    ({"camera": "cam-9"}, []),
    ({"label": "fallen", "since": 2500.0}, []),
])
def test_query_filters(store, filters, frames):
    for e in EVENTS:
        store.add(e, None)
    assert [row["frame_end"] for row in store.query(**filters)] == frames


def test_purge_removes_old_events_and_their_pictures(store, clock):
    old, new = make_event(frame_end=1, emitted_at=clock.now - 8 * 86400), make_event(frame_end=2,
                                                                                     emitted_at=clock.now)
    store.add(old, JPEG)
    store.add(new, JPEG)
    assert store.purge(7 * 86400) == 1
    assert [row["id"] for row in store.query()] == [new.id]
    assert store.snapshot_path(old.id) is None and not (store.snapshots_dir / f"{old.id}.jpg").exists()
    assert store.snapshot_path(new.id) is not None
    assert store.purge(7 * 86400) == 0


@pytest.mark.parametrize("event_id", ["../etc/passwd", "a/b", "..", "x" * 200, "id with space"])
def test_ids_unfit_for_a_file_name_are_refused(store, event_id):
    with pytest.raises(HistoryError, match="event id"):
        store.add(dataclasses.replace(make_event(), id=event_id), JPEG)
    assert store.snapshot_path(event_id) is None
    assert store.count() == 0


def test_two_stores_on_one_database_share_the_rows(store):
    other = EventStore(store.url, store.snapshots_dir)
    try:
        event = make_event()
        assert store.add(event, None) is True
        assert other.add(event, None) is False  # e.g. two recorders on one database
        assert [r["id"] for r in other.query()] == [event.id]
    finally:
        other.close()


@pytest.mark.parametrize("url, message", [
    ("mysql://u@h/db", "not supported"),
    ("not a url", "not a database URL"),
    ("postgresql://postgres@127.0.0.1:1/none", "cannot open the event history"),
])
def test_bad_history_urls_are_clear_errors(tmp_path, url, message):
    with pytest.raises(HistoryError, match=message):
        EventStore(url, tmp_path)


def test_settings_name_sqlite_in_the_data_dir_by_default(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    url, snaps = history_location(settings)
    assert url == f"sqlite:///{tmp_path / 'data' / 'actionstream.db'}"
    assert snaps == tmp_path / "data" / "snapshots"
    assert not store_exists(settings)
    EventStore.from_settings(settings).close()
    assert store_exists(settings)
    other = Settings(history_url="postgresql://u@db/x", snapshots_dir=tmp_path / "pics")
    assert history_location(other) == ("postgresql://u@db/x", tmp_path / "pics")


def test_readers_in_other_threads_see_the_rows(store):
    """The web page queries from its worker threads while the recorder writes."""
    events = [make_event(frame_end=n) for n in range(20)]
    for e in events[:10]:
        store.add(e, None)
    errors, seen = [], []

    def read():
        try:
            seen.append(len(store.query(limit=100)))
        except Exception as exc:  # reported below, with its type
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for e in events[10:]:
        store.add(e, None)
    for t in threads:
        t.join(30)
    assert not errors and all(10 <= n <= 20 for n in seen) and len(seen) == 4
    assert store.count() == 20


@pytest.mark.parametrize("backend", BACKENDS)
def test_stores_opened_at_once_on_an_empty_database_all_open(tmp_path, backend):
    """The recorder and the web page starting together both create the table: neither fails."""
    with database_url(backend, tmp_path) as url:
        barrier, opened, errors = threading.Barrier(4), [], []

        def open_one():
            barrier.wait()
            try:
                opened.append(EventStore(url, tmp_path / "snaps"))
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and len(opened) == 4
        assert opened[0].add(make_event(), None) and opened[3].count() == 1
        for s in opened:
            s.close()
