"""Two `actionstream up` runs of two different clips under the default camera id, one event
history: each run's events are in it, under ids of their own (an event id holds the run)."""

from __future__ import annotations

import pytest

from shared import codec
from tests.conftest import shared_path
from tests.integration.test_up import _up

pytestmark = pytest.mark.integration


def test_two_clips_on_the_default_camera_keep_their_events_apart(tmp_path):
    from shared.settings import load_settings
    from workers.history.store import EventStore

    data = tmp_path / "data"  # the history both runs record into (as the user's home is)
    env = {"ACTIONSTREAM_SHARED_DIR": str(shared_path()), "ACTIONSTREAM_DATA_DIR": str(data)}
    runs = {}
    for clip in ("fall-01", "fall-05"):
        ev = tmp_path / f"{clip}.jsonl"
        video = shared_path("data", "urfd", f"{clip}-cam0.mp4")
        proc = _up("--source", str(video), "--crop", "320,0,320,240", "--no-web", "--events-out", str(ev),
                   env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert " 0 duplicate(s)" in proc.stderr, proc.stderr[-3000:]
        runs[clip] = [codec.decode_event(line) for line in ev.read_text().splitlines()]
        assert runs[clip] and {e.camera for e in runs[clip]} == {"cam-1"}, (clip, proc.stderr[-2000:])
        assert all(e.ts_end <= e.emitted_at for e in runs[clip])  # read at full speed, emitted after
    ids = {clip: {e.id for e in events} for clip, events in runs.items()}
    assert not ids["fall-01"] & ids["fall-05"]

    store = EventStore.from_settings(load_settings(data_dir=data))
    assert {row["id"] for row in store.query(camera="cam-1")} == ids["fall-01"] | ids["fall-05"]
