"""What `actionstream up` keeps of a run: events, skeletons (Kinetics JSON), annotated video.

A :class:`Collector` follows the skeleton, score and event streams with plain XREAD (it is
no consumer group, so it takes nothing away from the workers) and holds what it read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from shared import codec, keys
from shared.codec import DecodeError
from shared.redisio import stream_entries, text
from shared.schemas import Event, Skeletons

log = logging.getLogger(__name__)


@dataclass
class CameraRecord:
    skeletons: dict[int, Skeletons] = field(default_factory=dict)  # seq -> skeletons
    labels: dict[int, dict[int, tuple[str, float]]] = field(default_factory=dict)  # seq -> track -> top
    eos: Optional[int] = None


class Collector:
    def __init__(self, r, cameras: list[str]) -> None:
        self.r = r
        self.cameras = {c: CameraRecord() for c in cameras}
        self.events: list[Event] = []
        self._ids = {keys.skeletons_stream(c): "0" for c in cameras}
        self._ids.update({keys.scores_stream(c): "0" for c in cameras})
        self._ids[keys.EVENTS_STREAM] = "0"

    def poll(self, block_ms: Optional[int] = 200) -> int:
        """Read what is new; ``block_ms=None`` does not wait (0 would wait forever)."""
        resp = self.r.xread(self._ids, count=1000, block=block_ms)
        entries = stream_entries(resp)
        for stream, entry_id, fields in entries:
            self._ids[stream] = entry_id
            self._take(stream, fields)
        return len(entries)

    def drain(self) -> None:
        while self.poll(block_ms=None):
            pass

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
            msg = codec.decode_skeletons(fields)
            if isinstance(msg, Skeletons):
                record.skeletons[msg.seq] = msg
            else:
                record.eos = msg.seq
        except (DecodeError, KeyError, ValueError) as exc:
            log.warning("collector: skipped an entry of %s: %s", stream, exc)

    def frames_done(self) -> int:
        return sum(len(r.skeletons) for r in self.cameras.values())


def write_events(events: list[Event], path: str | Path) -> None:
    with open(path, "w") as fh:
        for event in sorted(events, key=lambda e: (e.camera, e.frame_end, e.track_id, e.label)):
            fh.write(codec.encode_event(event) + "\n")


def kinetics_skeleton_json(record: CameraRecord, camera: str) -> dict:
    """The ST-GCN Kinetics-skeleton layout: ``data[].frame_index`` from 1, ``pose`` 36
    values (x, y per joint, normalised 0..1), ``score`` 18 values, plus ``track_id``."""
    data = []
    for seq in sorted(record.skeletons):
        skel = record.skeletons[seq]
        people = []
        for p in skel.people:
            xy = p.keypoints[:, :2] / np.array([skel.width, skel.height], dtype=np.float32)
            xy[p.keypoints[:, 2] <= 0] = 0.0
            people.append({"pose": np.round(xy, 4).ravel().tolist(),
                           "score": np.round(p.keypoints[:, 2], 4).tolist(),
                           "track_id": p.track_id})
        data.append({"frame_index": seq + 1, "skeleton": people})
    return {"camera": camera, "data": data, "label": "unknown", "label_index": -1}


def write_skeletons(collector: Collector, out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for camera, record in collector.cameras.items():
        path = out_dir / f"{camera}.json"
        path.write_text(json.dumps(kinetics_skeleton_json(record, camera)))
        paths.append(path)
    return paths
