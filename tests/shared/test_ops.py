import io
import threading
import time

from shared import codec, keys
from shared.ops import print_dead_letters, print_events, status
from shared.schemas import Event
from shared.settings import load_settings


def _event(cam, end):
    return Event(cam, 1, "falling", 1, 0.9, end - 10, end, 1.0, 2.0, "fall", 3.0)


def test_events_prints_stored_events_filtered_by_camera(r, redis_url):
    for cam, end in (("a", 10), ("b", 20), ("a", 30)):
        r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(_event(cam, end))})
    r.xadd(keys.EVENTS_STREAM, {"event": "{broken"})
    out = io.StringIO()
    assert print_events(load_settings(redis_url=redis_url), camera="a", out=out) == 0
    lines = [codec.decode_event(x) for x in out.getvalue().splitlines()]
    assert [e.frame_end for e in lines] == [10, 30]


def test_events_follow_prints_new_events(r, redis_url):
    out = io.StringIO()
    t = threading.Thread(target=print_events, args=(load_settings(redis_url=redis_url),),
                         kwargs={"follow": True, "out": out, "max_events": 2})
    t.start()
    time.sleep(0.3)
    for end in (5, 6):
        r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(_event("c", end))})
    t.join(10)
    assert not t.is_alive()
    assert [codec.decode_event(x).frame_end for x in out.getvalue().splitlines()] == [5, 6]


def test_status_and_dead_letters(r, redis_url):
    r.hset(keys.CAMERAS_KEY, "cam-1", "{}")
    r.xadd(keys.frames_stream("cam-1"), {"x": "1"})
    dl = codec.dead_letter_for("pose", "s", "1-0", {"jpeg": b"\xff" * 1000}, "JPEG cannot be decoded")
    r.xadd(keys.DEADLETTER_STREAM, codec.encode_dead_letter(dl))
    st = status(r)
    assert st["cameras"]["cam-1"]["frames_len"] == 1 and st["cameras"]["cam-1"]["pose_lag"] is None
    assert st["dead_letters"] == 1
    out = io.StringIO()
    print_dead_letters(load_settings(redis_url=redis_url), out=out)
    assert "JPEG cannot be decoded" in out.getvalue() and "<1000 bytes>" in out.getvalue()
