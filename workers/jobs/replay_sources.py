"""What a replay reads: a camera's archive between two times, a video file, a folder of
videos (or of images). Each yields :class:`Item` s, the stream fields ready to publish
under the replay camera, from after the checkpoint's seq on.

Archived frames and skeletons are published with their fields exactly as archived (the
very same JPEG bytes, seq and capture time), only the ``camera`` field is the replay's;
each is decoded first, so an archived record that does not decode is skipped and counted.
Videos are decoded and JPEG-encoded as the producer does (:mod:`producer.sources`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional


from producer.sources import IMAGE_SUFFIXES, SourceError, crop_and_resize, jpeg_frame, open_source
from shared import codec
from shared.schemas import EndOfStream, Frame
from workers.jobs.replay import JobSpec, ReplayError, ReplayFailed, _when

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg"}


@dataclass(frozen=True)
class Item:
    seq: int
    ts: float
    fields: dict  # the stream entry's fields, naming the replay camera


# ---------------------------------------------------------------- archive


def open_reader(settings):
    """The archive's reader (workers/archive: the archive engineer's contract)."""
    from workers.archive.reader import ArchiveReader
    from workers.archive.storage import open_storage

    return ArchiveReader(open_storage(settings))


def archive_location(reader) -> str:
    """Where ``reader`` reads: its directory (a local archive), else its storage."""
    return str(getattr(reader.storage, "root", reader.storage))


def check_archive(reader, spec: JobSpec, start: Optional[str] = None, end: Optional[str] = None) -> int:
    """The number of archived records the replay of ``spec`` will read; ReplayError, naming
    the directory looked in, when the camera has nothing archived there or the range is
    empty. ``start``, ``end``: the times as the user typed them (else ISO 8601 UTC)."""
    cameras = reader.cameras()
    if spec.camera not in cameras:
        raise ReplayError(f"camera {spec.camera} has nothing archived in {archive_location(reader)} "
                          f"(archived cameras there: {', '.join(cameras) or 'none'})")
    total = reader.count(spec.camera, spec.kind, spec.start_ts, spec.end_ts)
    if not total:
        start = start or _when(spec.start_ts) or "the start"
        end = end or _when(spec.end_ts) or "the end"
        raise ReplayError(f"camera {spec.camera} has no archived {spec.kind} between {start} and {end} "
                          f"in {archive_location(reader)}")
    return total


def with_camera(fields: dict, camera: str) -> dict:
    """``fields`` with the ``camera`` field (bytes or str key) replaced, nothing else touched."""
    out = {k: v for k, v in fields.items() if (k.decode() if isinstance(k, bytes) else k) != "camera"}
    out["camera"] = camera
    return out


def archive_items(reader, spec: JobSpec, after_seq: Optional[int], bad: list) -> Iterator[Item]:
    """The archived records of ``spec`` after ``after_seq``, as the replay camera's items;
    undecodable ones are appended to ``bad`` (seq, reason) and skipped."""
    decode = codec.decode_frame if spec.kind == "frames" else codec.decode_skeletons
    camera = spec.replay_camera
    for rec in reader.read(spec.camera, spec.kind, spec.start_ts, spec.end_ts, after_seq=after_seq):
        try:
            msg = decode(rec.fields)
        except codec.DecodeError as exc:
            log.warning("camera %s: archived %s seq %d skipped: %s", camera, spec.kind, rec.seq, exc)
            bad.append((rec.seq, str(exc)))
            continue
        if isinstance(msg, EndOfStream):
            continue  # the replay ends with its own
        yield Item(msg.seq, msg.ts, with_camera(rec.fields, camera))


# ---------------------------------------------------------------- videos


def video_files(path: str) -> list[Path]:
    """The videos of ``path``: the file itself, or a folder's videos in name order (a folder
    of images is one source); ReplayError when there is nothing to read."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ReplayError(f"video {path} does not exist")
    videos = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES)
    if videos:
        return videos
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()):
        return [p]
    raise ReplayError(f"folder {path} holds no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) nor images")


def check_videos(spec: JobSpec) -> int:
    """Frames in the videos of ``spec`` (0 when unknown); ReplayError when one cannot be opened."""
    total = 0
    for f in video_files(spec.path):
        try:
            source = open_source(str(f), spec.fps)
        except SourceError as exc:
            raise ReplayError(str(exc)) from None
        total += source.frame_count
        source.close()
    return total


def video_items(spec: JobSpec, after_seq: Optional[int], width: int = 0,
                quality: int = 90) -> Iterator[Item]:
    """Frames of the videos of ``spec`` after ``after_seq``: seq counts on across files, ts
    from ``spec.t0`` at each file's rate. ReplayFailed when a video cannot be read to its end."""
    seq, ts, camera = 0, spec.t0, spec.replay_camera
    for f in video_files(spec.path):
        try:
            source = open_source(str(f), spec.fps)
        except SourceError as exc:
            raise ReplayFailed(str(exc)) from None
        read = 0
        try:
            for image in source.frames():
                if after_seq is None or seq > after_seq:
                    yield Item(seq, ts, codec.encode_frame(_frame(camera, seq, ts, image, width, quality)))
                seq, ts, read = seq + 1, ts + 1.0 / source.fps, read + 1
        finally:
            source.close()
        if source.frame_count and read < source.frame_count:
            raise ReplayFailed(f"video {f} ended after {read} of its {source.frame_count} frames "
                               "(corrupt or truncated)")


def _frame(camera: str, seq: int, ts: float, image, width: int, quality: int) -> Frame:
    try:
        return jpeg_frame(camera, seq, ts, crop_and_resize(image, None, width), quality)
    except SourceError as exc:
        raise ReplayFailed(str(exc)) from None
