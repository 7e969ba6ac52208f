"""All (de)serialisation of actionstream messages, and its one error type.

Frames and skeletons travel as Redis Stream field maps; events and dead letters as JSON.
Every decoder checks the schema version, the types, the sizes and finiteness, and raises
:class:`DecodeError` with a reason a person can act on.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np

from shared.errors import UserError
from shared.schemas import MAX_RUN_CHARS, SCHEMA_VERSION, DeadLetter, EndOfStream, Event, Frame, Skeletons
from shared.skeleton import NUM_JOINTS, Person

MAX_FRAME_BYTES = 16 * 1024 * 1024  # a JPEG larger than this is rejected, not decoded
MAX_FRAME_SIDE = 8192
MAX_PEOPLE = 256
MAX_JSON_BYTES = 4 * 1024 * 1024


class DecodeError(UserError, ValueError):
    """A message cannot be decoded; the text says why."""


Fields = Mapping[Any, Any]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _normalise(fields: Fields) -> dict[str, Any]:
    if not isinstance(fields, Mapping):
        raise DecodeError(f"message must be a field map, got {type(fields).__name__}")
    return {_text(k): v for k, v in fields.items()}


def _get(fields: dict[str, Any], name: str) -> Any:
    try:
        return fields[name]
    except KeyError:
        raise DecodeError(f"field {name!r} is missing") from None


def _int(fields: dict[str, Any], name: str, lo: int = 0, hi: int = 2**62) -> int:
    raw = _text(_get(fields, name))
    try:
        value = int(raw)
    except ValueError:
        raise DecodeError(f"field {name!r} must be an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise DecodeError(f"field {name!r} = {value} is outside {lo}..{hi}")
    return value


def _float(fields: dict[str, Any], name: str) -> float:
    raw = _text(_get(fields, name))
    try:
        value = float(raw)
    except ValueError:
        raise DecodeError(f"field {name!r} must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise DecodeError(f"field {name!r} is not finite ({raw})")
    return value


def _check_version(fields: dict[str, Any]) -> None:
    version = _int(fields, "v", 0, 10**6)
    if version != SCHEMA_VERSION:
        raise DecodeError(f"unknown schema version {version} (this build reads {SCHEMA_VERSION})")


def _kind(fields: dict[str, Any]) -> str:
    return _text(fields.get("kind", ""))


def _run(fields: dict[str, Any]) -> str:
    """The optional ``run`` field (absent in messages written before it existed: "")."""
    run = _text(fields.get("run", ""))
    if len(run) > MAX_RUN_CHARS or not run.isprintable():
        raise DecodeError(f"field 'run' must be at most {MAX_RUN_CHARS} printable characters")
    return run


def _with_run(fields: dict[str, Any], run: str) -> dict[str, Any]:
    if run:  # only when known: messages without a run stay as they were
        fields["run"] = run
    return fields


# ---------------------------------------------------------------- frames


def encode_frame(msg: Frame | EndOfStream) -> dict[str, Any]:
    if isinstance(msg, EndOfStream):
        return {"v": msg.schema_version, "kind": "eos", "camera": msg.camera, "seq": msg.seq}
    return _with_run({
        "v": msg.schema_version, "kind": "frame", "camera": msg.camera, "seq": msg.seq,
        "ts": repr(float(msg.ts)), "w": msg.width, "h": msg.height, "jpeg": msg.jpeg,
    }, msg.run)


def _open(fields: Fields, kind: str) -> tuple[dict[str, Any], str, EndOfStream | None]:
    """Checks shared by frame and skeleton messages: (fields, camera, end-of-stream or None)."""
    f = _normalise(fields)
    _check_version(f)
    camera = _text(_get(f, "camera"))
    if _kind(f) == "eos":
        return f, camera, EndOfStream(camera=camera, seq=_int(f, "seq"))
    if _kind(f) != kind:
        raise DecodeError(f"{kind} message has unknown kind {_kind(f)!r}")
    return f, camera, None


def decode_frame(fields: Fields) -> Frame | EndOfStream:
    f, camera, eos = _open(fields, "frame")
    if eos is not None:
        return eos
    jpeg = _get(f, "jpeg")
    if not isinstance(jpeg, (bytes, bytearray)):
        raise DecodeError("field 'jpeg' must be bytes")
    if len(jpeg) > MAX_FRAME_BYTES:
        raise DecodeError(f"frame of {len(jpeg)} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    if len(jpeg) < 4 or jpeg[:2] != b"\xff\xd8":
        raise DecodeError("field 'jpeg' is not a JPEG (no SOI marker)")
    return Frame(
        camera=camera, seq=_int(f, "seq"), ts=_float(f, "ts"),
        width=_int(f, "w", 1, MAX_FRAME_SIDE), height=_int(f, "h", 1, MAX_FRAME_SIDE),
        jpeg=bytes(jpeg), run=_run(f),
    )


def decode_jpeg(frame: Frame) -> np.ndarray:
    """The frame's BGR image; raises DecodeError for a corrupt JPEG or a size mismatch."""
    import cv2  # OpenCV is only needed by the stages that look at pixels

    image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DecodeError(f"camera {frame.camera} frame {frame.seq}: JPEG cannot be decoded")
    if image.shape[:2] != (frame.height, frame.width):
        raise DecodeError(
            f"camera {frame.camera} frame {frame.seq}: JPEG is {image.shape[1]}x{image.shape[0]}, "
            f"message says {frame.width}x{frame.height}"
        )
    return image


# ---------------------------------------------------------------- skeletons


def _person_json(p: Person) -> dict[str, Any]:
    return {
        "id": p.track_id,
        "kp": np.round(p.keypoints.astype(np.float64), 3).ravel().tolist(),
        "box": np.round(p.box.astype(np.float64), 2).tolist(),
        "score": round(p.score, 4),
    }


def _person_from(obj: Any, i: int) -> Person:
    if not isinstance(obj, dict):
        raise DecodeError(f"person {i} must be an object")
    try:
        kp = np.asarray(obj["kp"], dtype=np.float32)
        box = np.asarray(obj["box"], dtype=np.float32)
        track_id = int(obj.get("id", -1))
        score = float(obj["score"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"person {i}: {exc.__class__.__name__}: {exc}") from None
    if kp.size != NUM_JOINTS * 3:
        raise DecodeError(f"person {i}: 'kp' must hold 18x3 = 54 numbers, got {kp.size}")
    try:
        return Person(kp.reshape(NUM_JOINTS, 3), box, score, track_id)
    except ValueError as exc:
        raise DecodeError(f"person {i}: {exc}") from None


def encode_skeletons(msg: Skeletons | EndOfStream) -> dict[str, Any]:
    if isinstance(msg, EndOfStream):
        return {"v": msg.schema_version, "kind": "eos", "camera": msg.camera, "seq": msg.seq}
    people = json.dumps([_person_json(p) for p in msg.people], separators=(",", ":"))
    return _with_run({
        "v": msg.schema_version, "kind": "skeletons", "camera": msg.camera, "seq": msg.seq,
        "ts": repr(float(msg.ts)), "w": msg.width, "h": msg.height, "model": msg.model,
        "people": people,
    }, msg.run)


def decode_skeletons(fields: Fields) -> Skeletons | EndOfStream:
    f, camera, eos = _open(fields, "skeletons")
    if eos is not None:
        return eos
    raw = _get(f, "people")
    if len(raw) > MAX_JSON_BYTES:
        raise DecodeError(f"field 'people' of {len(raw)} bytes exceeds {MAX_JSON_BYTES}")
    try:
        people = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"field 'people' is not JSON: {exc}") from None
    if not isinstance(people, list) or len(people) > MAX_PEOPLE:
        raise DecodeError(f"field 'people' must be a list of at most {MAX_PEOPLE} people")
    return Skeletons(
        camera=camera, seq=_int(f, "seq"), ts=_float(f, "ts"),
        width=_int(f, "w", 1, MAX_FRAME_SIDE), height=_int(f, "h", 1, MAX_FRAME_SIDE),
        people=tuple(_person_from(p, i) for i, p in enumerate(people)),
        model=_text(_get(f, "model")), run=_run(f),
    )


# ---------------------------------------------------------------- events

_EVENT_FIELDS = {
    "id": str, "camera": str, "track_id": int, "label": str, "label_index": int, "score": float,
    "frame_start": int, "frame_end": int, "ts_start": float, "ts_end": float, "model": str,
    "emitted_at": float,
}


def event_to_dict(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"schema_version": event.schema_version}
    out.update({name: getattr(event, name) for name in _EVENT_FIELDS})
    if event.job:  # replay events only: live events keep their original form
        out["job"] = event.job
    return out


def encode_event(event: Event) -> str:
    return json.dumps(event_to_dict(event), separators=(",", ":"))


def decode_event(raw: str | bytes) -> Event:
    if len(raw) > MAX_JSON_BYTES:
        raise DecodeError("event JSON is too large")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"event is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError("event must be a JSON object")
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise DecodeError(f"unknown event schema version {obj.get('schema_version')!r}")
    values: dict[str, Any] = {}
    for name, kind in _EVENT_FIELDS.items():
        if name not in obj:
            raise DecodeError(f"event field {name!r} is missing")
        value = obj[name]
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or isinstance(value, bool):
            raise DecodeError(f"event field {name!r} must be {kind.__name__}, got {value!r}")
        if kind is float and not math.isfinite(value):
            raise DecodeError(f"event field {name!r} is not finite")
        values[name] = kind(value)
    event = Event(**values)
    if obj.get("job", event.job) != event.job:  # replay events carry it; others need not
        raise DecodeError(f"event field 'job' {obj['job']!r} is not the job of camera {event.camera!r}")
    return event


# ---------------------------------------------------------------- dead letters

MAX_DEADLETTER_FIELD = 256


def encode_dead_letter(dl: DeadLetter) -> dict[str, Any]:
    return {
        "v": dl.schema_version, "stage": dl.stage, "stream": dl.stream, "id": dl.message_id,
        "reason": dl.reason, "fields": json.dumps(dl.fields),
    }


def dead_letter_for(stage: str, stream: str, message_id: Any, fields: Fields, reason: str) -> DeadLetter:
    """A dead letter keeping a printable, truncated copy of the raw fields."""
    shown = {}
    for k, v in dict(fields).items():
        if isinstance(v, (bytes, bytearray)) and len(v) > MAX_DEADLETTER_FIELD:
            text = f"<{len(v)} bytes>"
        else:
            text = _text(v)[:MAX_DEADLETTER_FIELD]
        shown[_text(k)[:64]] = text
    return DeadLetter(stage, _text(stream), _text(message_id), reason[:1000], shown)


def decode_dead_letter(fields: Fields) -> DeadLetter:
    f = _normalise(fields)
    _check_version(f)
    try:
        raw = json.loads(_text(_get(f, "fields")))
    except ValueError as exc:
        raise DecodeError(f"dead letter 'fields' is not JSON: {exc}") from None
    return DeadLetter(
        _text(_get(f, "stage")), _text(_get(f, "stream")), _text(_get(f, "id")),
        _text(_get(f, "reason")), raw if isinstance(raw, dict) else {},
    )
