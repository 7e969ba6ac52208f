"""What `up` keeps of a run: only this run's events; skeletons spooled to disk, exported 0-based."""

from __future__ import annotations

import json

import numpy as np

from shared import codec, keys
from shared.schemas import EndOfStream, Event, Skeletons
from shared.skeleton import Person
from workers.console.exports import Collector, events_stream_end, read_spool, write_events, write_skeletons


def _event(camera: str, frame_end: int) -> Event:
    return Event(camera=camera, track_id=1, label="falling", label_index=1, score=0.9,
                 frame_start=frame_end - 47, frame_end=frame_end, ts_start=0.0, ts_end=1.0,
                 model="fall", emitted_at=1.0)


def _skeletons(camera: str, seq: int) -> Skeletons:
    kp = np.zeros((18, 3), dtype=np.float32)
    kp[1] = (32.0 + seq, 24.0, 0.9)  # the neck
    kp[2] = (16.0, 12.0, 0.8)
    person = Person(kp, np.array([10, 10, 60, 40], dtype=np.float32), 0.85, track_id=3)
    return Skeletons(camera=camera, seq=seq, ts=seq / 30, width=64, height=48, people=(person,),
                     model="movenet")


def test_the_events_of_earlier_runs_are_not_this_runs(r, tmp_path):
    r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(_event("cam-a", 100))})  # an earlier run
    collector = Collector(r, ["cam-a"], events_after=events_stream_end(r))
    now = _event("cam-a", 200)
    r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(now)})
    r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(_event("cam-other", 200))})
    collector.drain()
    assert [e.id for e in collector.events] == [now.id]
    write_events(collector.events, tmp_path / "ev.jsonl")
    lines = (tmp_path / "ev.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame_end"] for line in lines] == [200]


def test_skeletons_go_to_a_spool_and_export_0_based_as_the_reader_reads_them(r, tmp_path):
    from shared.kinetics import read_exported_skeletons

    stream = keys.skeletons_stream("cam-a")
    for seq in (0, 1, 1, 2):  # seq 1 written twice (a takeover): one frame
        r.xadd(stream, codec.encode_skeletons(_skeletons("cam-a", seq)))
    r.xadd(stream, codec.encode_skeletons(EndOfStream("cam-a", 3)))
    with Collector(r, ["cam-a"], spool=True) as collector:
        collector.drain()
        record = collector.cameras["cam-a"]
        assert collector.frames_done() == 3
        assert [seq for seq, *_ in read_spool(record.spool)] == [0, 1, 2]  # on disk, not in memory
        assert not hasattr(record, "skeletons")
        [path] = write_skeletons(collector, tmp_path / "out")
        [again] = write_skeletons(collector, tmp_path / "again")  # a spool reads again from its start
    assert again.read_text() == path.read_text()
    assert record.spool is None  # closed: the unnamed file is gone
    doc = json.loads(path.read_text())
    assert doc["camera"] == "cam-a" and [f["frame_index"] for f in doc["data"]] == [0, 1, 2]
    person = doc["data"][2]["skeleton"][0]
    assert person["track_id"] == 3 and len(person["pose"]) == 36 and len(person["score"]) == 18
    assert person["pose"][2:4] == [round(34 / 64, 4), 0.5]  # the neck, x / width, y / height
    assert person["pose"][0:2] == [0.0, 0.0]  # a missing joint

    camera, frames = read_exported_skeletons(path, size=(64, 48))
    assert camera == "cam-a" and [s.seq for s in frames] == [0, 1, 2]  # events' frame numbers
    np.testing.assert_allclose(frames[2].people[0].keypoints[1], (34.0, 24.0, 0.9), atol=0.01)
