"""What `actionstream up` keeps of a run: events, skeletons (Kinetics JSON), annotated video.

A :class:`Collector` follows the skeleton, score and event streams with plain XREAD (it is
no consumer group, so it takes nothing away from the workers). It holds no skeletons in
memory: each camera's frames are appended to a spool (an unnamed temporary file, JSON lines,
pixel keypoints: it vanishes with the process, however that ends) as they arrive, and the
exports are written from the spools at the end, one frame at a time.
It keeps the events of this run (read from the events stream's end at the start of the
run) and each track's scores (one per window), both small.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Optional

import numpy as np

from shared import codec, keys
from shared.codec import DecodeError
from shared.redisio import stream_entries, text, xread_any
from shared.schemas import Event, Skeletons
from shared.kinetics import write_kinetics_frames
from shared.skeleton import Person

log = logging.getLogger(__name__)


@dataclass
class CameraRecord:
    frames: int = 0  # distinct frames seen
    last_seq: int = -1
    labels: dict[int, dict[int, tuple[str, float]]] = field(default_factory=dict)  # seq -> track -> top
    spool: Optional[IO[str]] = None  # JSON lines, one per frame (see spool_line)
    times: list[tuple[int, float]] = field(default_factory=list)  # (seq, ts) of its first and last frame

    def fps(self) -> Optional[float]:
        """The rate its frames were stamped at (from the first and last frame's seq and ts)."""
        if len(self.times) < 2 or self.times[-1][1] <= self.times[0][1]:
            return None
        (s0, t0), (s1, t1) = self.times[0], self.times[-1]
        return round((s1 - s0) / (t1 - t0), 3)


def events_stream_end(r) -> str:
    """The id of the events stream's last entry ("0" when empty): a run's collector reads
    after it, so earlier runs' events on the same Redis are not this run's."""
    last = r.xrevrange(keys.EVENTS_STREAM, count=1)
    return text(last[0][0]) if last else "0"


class Collector:
    def __init__(self, r, cameras: list[str], spool: bool = False, events_after: str = "0") -> None:
        self.r = r
        self.cameras = {c: CameraRecord() for c in cameras}
        self.events: list[Event] = []
        self._ids = {keys.skeletons_stream(c): "0" for c in cameras}
        self._ids.update({keys.scores_stream(c): "0" for c in cameras})
        self._ids[keys.EVENTS_STREAM] = events_after
        if spool:
            for record in self.cameras.values():
                record.spool = tempfile.TemporaryFile("w+", prefix="actionstream-spool-")

    def poll(self, block_ms: Optional[int] = 200) -> int:
        """Read what is new; ``block_ms=None`` does not wait (0 would wait forever)."""
        resp = xread_any(self.r, self._ids, count=1000, block=block_ms)  # per node on a cluster
        entries = stream_entries(resp)
        for stream, entry_id, fields in entries:
            self._ids[stream] = entry_id
            self._take(stream, fields)
        return len(entries)

    def drain(self) -> None:
        while self.poll(block_ms=None):
            pass

    def close(self) -> None:
        """Remove the spools."""
        for record in self.cameras.values():
            if record.spool is not None:
                record.spool.close()
                record.spool = None

    def __enter__(self) -> "Collector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _take(self, stream: str, fields: dict) -> None:
        try:
            if stream == keys.EVENTS_STREAM:
                event = codec.decode_event(fields[b"event"])
                if event.camera in self.cameras:
                    self.events.append(event)
                return
            camera = keys.camera_of_stream(stream)
            record = self.cameras[camera]
            if stream == keys.scores_stream(camera):
                seq, track = int(fields[b"frame_end"]), int(fields[b"track_id"])
                record.labels.setdefault(seq, {})[track] = (text(fields[b"label"]), float(fields[b"score"]))
                return
            msg = codec.decode_skeletons(fields)  # an end of stream is no frame
            if isinstance(msg, Skeletons) and msg.seq > record.last_seq:  # a frame written again counts once
                record.frames += 1
                record.last_seq = msg.seq
                record.times[1 if record.times else 0:] = [(msg.seq, msg.ts)]
                if record.spool is not None:
                    record.spool.write(spool_line(msg) + "\n")
        except (DecodeError, KeyError, ValueError) as exc:
            log.warning("collector: skipped an entry of %s: %s", stream, exc)

    def frames_done(self) -> int:
        return sum(r.frames for r in self.cameras.values())


def spool_line(skel: Skeletons) -> str:
    people = [{"kp": np.round(p.keypoints.astype(np.float64), 4).ravel().tolist(),
               "box": np.round(p.box.astype(np.float64), 1).tolist(),
               "score": round(float(p.score), 4), "track_id": p.track_id} for p in skel.people]
    return json.dumps({"seq": skel.seq, "width": skel.width, "height": skel.height, "people": people})


def read_spool(spool: IO[str]) -> Iterator[tuple[int, int, int, list[Person]]]:
    """``(seq, width, height, people)`` per line of a spool, from its start, in the order written."""
    spool.flush()
    spool.seek(0)
    for line in spool:
        row = json.loads(line)
        people = [Person(np.asarray(p["kp"], dtype=np.float32).reshape(-1, 3), p["box"], p["score"],
                         p["track_id"]) for p in row["people"]]
        yield row["seq"], row["width"], row["height"], people
    spool.seek(0, 2)  # back to the end: the collector may append more


def write_events(events: list[Event], path: str | Path) -> None:
    with open(path, "w") as fh:
        for event in sorted(events, key=lambda e: (e.camera, e.frame_end, e.track_id, e.label)):
            fh.write(codec.encode_event(event) + "\n")


def write_kinetics_json(record: CameraRecord, camera: str, path: Path) -> Path:
    """The camera's export, written frame by frame from its spool."""
    return write_kinetics_frames(read_spool(record.spool) if record.spool is not None else (), camera, path,
                                 record.fps())


def write_skeletons(collector: Collector, out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_kinetics_json(record, camera, out_dir / f"{camera}.json")
            for camera, record in collector.cameras.items()]
