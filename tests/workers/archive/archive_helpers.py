"""What the archive tests share: real JPEG frames, skeletons and events put on real streams."""

from __future__ import annotations

import json
import zlib

import cv2
import numpy as np

from shared import codec, keys
from shared.schemas import EndOfStream, Event, Frame, Skeletons
from shared.settings import load_settings
from shared.skeleton import NUM_JOINTS, Person

T0 = 1_800_000_000.0  # capture time of frame 0 (epoch seconds)
FPS = 10.0


class Clock:
    def __init__(self, now: float = T0 + 3600):
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings(redis_url: str, archive_dir, **extra):
    segment_s = extra.pop("segment_s", 2)
    return load_settings(redis_url=redis_url, archive_dir=archive_dir, archive_segment_s=segment_s, **extra)


def jpeg(i: int, size: int = 64) -> bytes:
    """A real JPEG, different for every ``i`` (noise seeded by it, so it compresses poorly)."""
    rng = np.random.default_rng(i)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def register(r, camera: str) -> None:
    r.hset(keys.CAMERAS_KEY, camera, json.dumps({"source": "test", "mode": "live"}))


def frame(camera: str, seq: int, size: int = 64) -> Frame:
    return Frame(camera, seq, T0 + seq / FPS, size, size, jpeg(zlib.crc32(camera.encode()) + seq, size))


def publish_frames(r, camera: str, seqs, size: int = 64, eos: bool = False) -> list[str]:
    """XADD the frames ``seqs`` of ``camera`` (registered); their entry ids."""
    register(r, camera)
    stream = keys.frames_stream(camera)
    ids = [r.xadd(stream, codec.encode_frame(frame(camera, s, size))).decode() for s in seqs]
    if eos:
        r.xadd(keys.frames_stream(camera), codec.encode_frame(EndOfStream(camera, max(seqs) + 1)))
    return ids


def person(track: int, seq: int) -> Person:
    kp = np.zeros((NUM_JOINTS, 3), np.float32)
    kp[:, 0] = 10 + track * 20 + np.arange(NUM_JOINTS) + seq * 0.5
    kp[:, 1] = 5 + np.arange(NUM_JOINTS) * 2.0
    kp[:, 2] = 0.9
    kp[3] = 0  # one joint not seen
    return Person(kp, np.array([kp[:, 0].min(), 5, kp[:, 0].max(), 41], np.float32), 0.8, track)


def skeletons(camera: str, seq: int, tracks=(1, 2)) -> Skeletons:
    return Skeletons(camera, seq, T0 + seq / FPS, 64, 64, tuple(person(t, seq) for t in tracks), "movenet")


def publish_skeletons(r, camera: str, seqs, tracks=(1, 2)) -> list[str]:
    register(r, camera)
    stream = keys.skeletons_stream(camera)
    return [r.xadd(stream, codec.encode_skeletons(skeletons(camera, s, tracks))).decode() for s in seqs]


def event(camera: str, frame_end: int, track: int = 1, label: str = "falling") -> Event:
    return Event(camera, track, label, 1, 0.9, frame_end - 30, frame_end, T0 + (frame_end - 30) / FPS,
                 T0 + frame_end / FPS, "seeded", T0 + 100)


def publish_event(r, ev: Event) -> str:
    return r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(ev)}).decode()


def stream_fields(r, stream: str) -> list[dict]:
    return [f for _, f in r.xrange(stream)]


def pending(r, stream: str, group: str = keys.ARCHIVE_GROUP) -> int:
    return int(r.xpending(stream, group)["pending"])
