import threading

import pytest
import redis

from producer.producer import Producer
from shared import codec, keys
from shared.redisio import ensure_group
from shared.schemas import EndOfStream, Frame
from shared.settings import load_settings, make_camera
from tests.conftest import shared_path


def _entries(r, camera):
    return [codec.decode_frame(f) for _, f in r.xrange(keys.frames_stream(camera))]


def test_replay_publishes_every_frame_cropped_then_end_of_stream(r, redis_url):
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    settings = load_settings(redis_url=redis_url, mode="replay", replay_max_lag=1000)
    cam = make_camera(id="cam-a", source=video, crop=(320, 0, 320, 240), width=160)
    assert Producer(settings, cam).run(max_frames=12) == 0
    msgs = _entries(r, "cam-a")
    frames = [m for m in msgs if isinstance(m, Frame)]
    assert [f.seq for f in frames] == list(range(12))
    assert isinstance(msgs[-1], EndOfStream) and msgs[-1].seq == 12
    assert (frames[0].width, frames[0].height) == (160, 120)
    assert codec.decode_jpeg(frames[3]).shape == (120, 160, 3)
    ts = [f.ts for f in frames]
    assert all(abs((b - a) - 1 / 30) < 1e-3 for a, b in zip(ts, ts[1:]))  # media time at 30 fps
    assert b"cam-a" in r.hkeys(keys.CAMERAS_KEY)


def test_replay_waits_while_the_consumer_lags(r, redis_url):
    """Backpressure: with a lag limit of 5 the producer never runs more than 5 ahead."""
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    settings = load_settings(redis_url=redis_url, mode="replay", replay_max_lag=5)
    cam = make_camera(id="cam-b", source=video)
    stream = keys.frames_stream("cam-b")
    ensure_group(r, stream, keys.POSE_GROUP)
    producer = Producer(settings, cam)
    t = threading.Thread(target=producer.run, kwargs={"max_frames": 30})
    t.start()
    consumed, max_seen = 0, 0
    while t.is_alive() or consumed < 31:
        resp = r.xreadgroup(keys.POSE_GROUP, "test", {stream: ">"}, count=1, block=2000)
        if not resp:
            if not t.is_alive():
                break
            continue
        max_seen = max(max_seen, r.xlen(stream) - consumed)
        entry_id = resp[0][1][0][0]
        r.xack(stream, keys.POSE_GROUP, entry_id)
        consumed += 1
    t.join(10)
    assert consumed == 31  # 30 frames + end of stream, nothing lost
    assert max_seen <= 5 + 1


def test_live_mode_trims_the_stream(r, redis_url):
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    settings = load_settings(redis_url=redis_url, mode="live", live_maxlen=10)
    cam = make_camera(id="cam-c", source=video, fps=1000)
    Producer(settings, cam).run(max_frames=300)
    assert r.xlen(keys.frames_stream("cam-c")) < 300


def test_unopenable_source_raises_before_touching_redis(r, redis_url, tmp_path):
    from producer.sources import SourceError

    settings = load_settings(redis_url=redis_url)
    with pytest.raises(SourceError):
        Producer(settings, make_camera(id="x", source=str(tmp_path / "none.mp4"))).run()
    assert r.hlen(keys.CAMERAS_KEY) == 0


def test_a_lost_live_stream_is_reopened(r, redis_url, tmp_path):
    """An HTTP stream that ends (a camera that disappears) is reopened with backoff."""
    import functools
    import http.server
    import shutil

    clip = tmp_path / "cam.mp4"
    shutil.copy(shared_path("data", "urfd", "fall-01-cam0.mp4"), clip)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cam.mp4"
    try:
        settings = load_settings(redis_url=redis_url, mode="live", live_maxlen=10_000)
        producer = Producer(settings, make_camera(id="cam-http", source=url, fps=1000))
        assert producer.run(max_frames=200) == 0  # the clip has 160 frames: it must reopen
    finally:
        server.shutdown()
    assert producer.stats["source_reopens"] >= 1
    frames = [m for m in _entries(r, "cam-http") if isinstance(m, Frame)]
    assert [f.seq for f in frames] == list(range(200))


def test_a_restarted_producer_continues_its_camera(r, redis_url):
    """Epochs: a second start continues seq after the last published one (a stage drops a
    seq that is not after its last), and the camera's epoch counts the starts."""
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    settings = load_settings(redis_url=redis_url, mode="replay", replay_max_lag=1000)
    cam = make_camera(id="cam-e", source=video, width=80)
    first, second = Producer(settings, cam), Producer(settings, cam)
    assert first.run(max_frames=5) == 0 and second.run(max_frames=4) == 0
    msgs = _entries(r, "cam-e")
    assert [m.seq for m in msgs if isinstance(m, Frame)] == list(range(9))
    assert [m.seq for m in msgs if isinstance(m, EndOfStream)] == [5, 9]
    assert (first.epoch, second.epoch) == (1, 2)
    assert int(r.hget(keys.producer_key("cam-e"), "epoch")) == 2
    # with the key gone (`up` starts a camera afresh) seq starts at 0 again
    r.delete(keys.producer_key("cam-e"), keys.frames_stream("cam-e"))
    assert Producer(settings, cam).run(max_frames=2) == 0
    assert [m.seq for m in _entries(r, "cam-e")] == [0, 1, 2]


class _LosesReplies(Producer):
    """Every third write lands but its reply is lost (a dropped connection, a failover)."""

    writes = 0

    def _xadd(self, fields, next_seq, maxlen=None):
        added = super()._xadd(fields, next_seq=next_seq, maxlen=maxlen)
        self.writes += 1
        if self.writes % 3 == 1:
            raise redis.ConnectionError("connection lost before the reply")
        return added


def test_a_write_retried_after_a_lost_reply_is_published_once(r, redis_url):
    """Replay retries a write until Redis takes it; one that landed without a reply must not
    land twice (frames and the end-of-stream marker), yet a new epoch's marker is published."""
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    settings = load_settings(redis_url=redis_url, mode="replay", replay_max_lag=1000)
    cam = make_camera(id="cam-lost", source=video, width=80)
    assert _LosesReplies(settings, cam, sleep=lambda _: None).run(max_frames=7) == 0
    msgs = _entries(r, "cam-lost")
    assert [m.seq for m in msgs if isinstance(m, Frame)] == list(range(7))
    assert [m.seq for m in msgs if isinstance(m, EndOfStream)] == [7]
    assert _LosesReplies(settings, cam, sleep=lambda _: None).run(max_frames=0) == 0  # epoch 2: its own end
    assert [m.seq for m in _entries(r, "cam-lost") if isinstance(m, EndOfStream)] == [7, 7]
