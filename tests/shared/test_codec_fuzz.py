"""Fuzz every decoder: arbitrary input gives a message or a DecodeError, nothing else."""

from hypothesis import given, settings
from hypothesis import strategies as st

from shared import codec
from shared.codec import DecodeError

values = st.one_of(st.binary(max_size=64), st.text(max_size=64), st.integers().map(str),
                   st.floats(allow_nan=True).map(repr))
field_names = st.sampled_from(["v", "kind", "camera", "seq", "ts", "w", "h", "jpeg", "people",
                               "model", "stage", "stream", "id", "reason", "fields", "x"])
fields = st.dictionaries(st.one_of(field_names, field_names.map(str.encode)), values, max_size=12)
# messages that are almost right: one valid map with a field replaced
frame_like = st.fixed_dictionaries({"v": st.just("1"), "kind": st.sampled_from(["frame", "eos", "?"]),
                                    "camera": st.text(max_size=8), "seq": values, "ts": values,
                                    "w": values, "h": values,
                                    "jpeg": st.binary(max_size=32).map(lambda b: b"\xff\xd8" + b)})
skel_like = st.fixed_dictionaries({"v": st.just("1"), "kind": st.sampled_from(["skeletons", "eos"]),
                                   "camera": st.text(max_size=8), "seq": values, "ts": values, "w": values,
                                   "h": values, "model": st.text(max_size=8),
                                   "people": st.one_of(values, st.lists(st.dictionaries(
                                       st.sampled_from(["kp", "box", "score", "id"]),
                                       st.one_of(st.lists(st.floats(), max_size=60), st.floats(),
                                                 st.text(max_size=4))),
                                       max_size=3).map(lambda x: __import__("json").dumps(x)))})
json_like = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                         lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                 st.dictionaries(st.text(max_size=12), inner, max_size=14)),
                         max_leaves=30)


def _decodes_or_rejects(decode, message):
    try:
        decode(message)
    except DecodeError as exc:
        assert str(exc)  # every rejection says why


@settings(max_examples=300, deadline=None)
@given(st.one_of(fields, frame_like))
def test_frame_decoder(message):
    _decodes_or_rejects(codec.decode_frame, message)


@settings(max_examples=300, deadline=None)
@given(st.one_of(fields, skel_like))
def test_skeleton_decoder(message):
    _decodes_or_rejects(codec.decode_skeletons, message)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 json_like.map(lambda x: __import__("json").dumps(x))))
def test_event_decoder(raw):
    _decodes_or_rejects(codec.decode_event, raw)


@settings(max_examples=200, deadline=None)
@given(fields)
def test_dead_letter_decoder(message):
    _decodes_or_rejects(codec.decode_dead_letter, message)
