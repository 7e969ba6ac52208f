import json
import math

import numpy as np
import pytest

from shared import codec
from shared.codec import DecodeError
from shared.schemas import EndOfStream, Event, Frame, Skeletons
from shared.skeleton import Person

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32


def _person(track=3):
    kp = np.arange(54, dtype=np.float32).reshape(18, 3) / 10
    return Person(kp, np.array([1, 2, 30, 40], np.float32), 0.9, track)


def _bytes_fields(fields):
    """What redis-py returns: bytes keys and values."""
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


def test_frame_round_trip():
    frame = Frame("cam-1", 7, 1234.5, 320, 240, JPEG)
    assert codec.decode_frame(_bytes_fields(codec.encode_frame(frame))) == frame


def test_end_of_stream_round_trip():
    eos = EndOfStream("cam-1", 99)
    assert codec.decode_frame(_bytes_fields(codec.encode_frame(eos))) == eos
    assert codec.decode_skeletons(_bytes_fields(codec.encode_skeletons(eos))) == eos


def test_skeletons_round_trip():
    msg = Skeletons("cam-1", 5, 10.25, 320, 240, (_person(3), _person(4)), "movenet")
    back = codec.decode_skeletons(_bytes_fields(codec.encode_skeletons(msg)))
    assert (back.camera, back.seq, back.ts, back.width, back.height, back.model) == (
        "cam-1", 5, 10.25, 320, 240, "movenet")
    assert [p.track_id for p in back.people] == [3, 4]
    np.testing.assert_allclose(back.people[0].keypoints, msg.people[0].keypoints, atol=1e-3)


def test_event_round_trip_and_deterministic_id():
    ev = Event("cam-1", 3, "falling", 1, 0.93, 10, 309, 1.0, 11.0, "fall", 12.0)
    again = Event("cam-1", 3, "falling", 1, 0.5, 10, 309, 1.0, 11.0, "fall", 99.0)
    assert ev.id == again.id  # same (camera, track, label, window end)
    assert codec.decode_event(codec.encode_event(ev)) == ev
    other = Event("cam-1", 3, "falling", 1, 0.93, 10, 310, 1.0, 11.0, "fall", 12.0)
    assert other.id != ev.id


GOOD_FRAME = {"v": "1", "kind": "frame", "camera": "c", "seq": "1", "ts": "1.0", "w": "4", "h": "4",
              "jpeg": JPEG}


@pytest.mark.parametrize("change, error", [
    ({"v": "2"}, "unknown schema version 2"),
    ({"v": "x"}, "'v' must be an integer"),
    ({"kind": "audio"}, "unknown kind 'audio'"),
    ({"seq": "-1"}, "'seq' = -1 is outside"),
    ({"ts": "nan"}, "'ts' is not finite"),
    ({"ts": "soon"}, "'ts' must be a number"),
    ({"w": "0"}, "'w' = 0 is outside"),
    ({"h": "99999"}, "'h' = 99999 is outside"),
    ({"jpeg": b"GIF89a"}, "not a JPEG"),
    ({"jpeg": b"\xff\xd8" + b"\x00" * (codec.MAX_FRAME_BYTES + 1)}, "exceeds the limit"),
    ({"camera": None}, "'camera' is missing"),
])
def test_frame_decoder_rejects(change, error):
    fields = {**GOOD_FRAME, **change}
    fields = {k: v for k, v in fields.items() if v is not None}
    with pytest.raises(DecodeError, match=error):
        codec.decode_frame(fields)


def test_frame_decoder_rejects_non_mapping():
    with pytest.raises(DecodeError, match="field map"):
        codec.decode_frame([("v", "1")])


def test_corrupt_jpeg_is_a_decode_error():
    frame = Frame("cam-1", 0, 0.0, 4, 4, JPEG)  # SOI marker but no image
    with pytest.raises(DecodeError, match="cannot be decoded"):
        codec.decode_jpeg(frame)


def test_jpeg_size_mismatch_is_a_decode_error():
    import cv2

    ok, buf = cv2.imencode(".jpg", np.zeros((10, 20, 3), np.uint8))
    with pytest.raises(DecodeError, match="20x10"):
        codec.decode_jpeg(Frame("cam-1", 0, 0.0, 30, 10, buf.tobytes()))


def _skel_fields(people):
    return {"v": "1", "kind": "skeletons", "camera": "c", "seq": "0", "ts": "0", "w": "10", "h": "10",
            "model": "m", "people": people if isinstance(people, (str, bytes)) else json.dumps(people)}


KP = [0.0] * 54


@pytest.mark.parametrize("people, error", [
    ("{not json", "not JSON"),
    ({"a": 1}, "must be a list"),
    ([1], "person 0 must be an object"),
    ([{"kp": [0.0] * 53, "box": [0, 0, 1, 1], "score": 1}], "54 numbers, got 53"),
    ([{"kp": KP[:-1] + [math.nan], "box": [0, 0, 1, 1], "score": 1}], "NaN"),
    ([{"kp": KP, "box": [0, 0, 1], "score": 1}], "box must be 4"),
    ([{"kp": KP, "box": [0, 0, 1, 1]}], "KeyError"),
    ([{"kp": KP, "box": [0, 0, 1, 1], "score": "high"}], "ValueError"),
    ([{"kp": KP, "box": [0, 0, 1, 1], "score": 1}] * (codec.MAX_PEOPLE + 1), "at most"),
])
def test_skeleton_decoder_rejects(people, error):
    with pytest.raises(DecodeError, match=error):
        codec.decode_skeletons(_skel_fields(people))


@pytest.mark.parametrize("raw, error", [
    ("[]", "JSON object"),
    ("nope", "not JSON"),
    ('{"schema_version": 9}', "unknown event schema version 9"),
    ('{"schema_version": 1}', "'id' is missing"),
])
def test_event_decoder_rejects(raw, error):
    with pytest.raises(DecodeError, match=error):
        codec.decode_event(raw)


def test_event_decoder_rejects_wrong_types():
    ev = codec.event_to_dict(Event("c", 1, "falling", 1, 0.9, 0, 10, 0.0, 1.0, "m", 2.0))
    for name, bad in (("track_id", "one"), ("score", float("inf")), ("label_index", True)):
        broken = {**ev, name: bad}
        with pytest.raises(DecodeError, match=name):
            codec.decode_event(json.dumps(broken))


def test_dead_letter_keeps_a_truncated_copy():
    dl = codec.dead_letter_for("pose", "s", b"1-0", {b"jpeg": b"x" * 10_000, b"seq": b"7"}, "bad")
    back = codec.decode_dead_letter(_bytes_fields(codec.encode_dead_letter(dl)))
    assert back.fields == {"jpeg": "<10000 bytes>", "seq": "7"}
    assert (back.stage, back.message_id, back.reason) == ("pose", "1-0", "bad")
