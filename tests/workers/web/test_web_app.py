"""The web app over real HTTP (uvicorn on a free port) against a real Redis, with frames of
a real clip posed by the real pose worker and events written by the action worker's script."""

from __future__ import annotations

import dataclasses
import http.client
import json
import re
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest

from shared import codec, heartbeat, keys
from tests.workers.web import pipeline as pl
from tests.workers.web.pipeline import CAMERA, get, get_json, serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def movenet():
    return pl.load_movenet()


@pytest.fixture
def posed(r, redis_url, movenet, tmp_path):
    """8 frames of the clip through the pose worker; the settings the app is given."""
    pl.publish(redis_url, frames=8)
    pl.run_pose(redis_url, movenet)
    return pl.settings(redis_url, data_dir=tmp_path)


def _decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _newest_posed(r):
    (_, fields), = r.xrevrange(keys.recent_frames_stream(CAMERA), count=1)
    return codec.decode_skeletons(fields), _decode(fields[b"jpeg"])


def _drawn_at_joints(view: np.ndarray, raw: np.ndarray, person) -> float:
    diff = np.abs(view.astype(int) - raw.astype(int)).sum(axis=2) > 60
    seen = [(int(x), int(y)) for x, y, c in person.keypoints if c > 0]
    return float(np.mean([diff[max(0, y - 2):y + 3, max(0, x - 2):x + 3].any() for x, y in seen]))


def test_a_cameras_view_is_its_newest_posed_frame_with_skeletons_drawn(r, posed):
    skel, raw = _newest_posed(r)
    assert skel.seq == 7 and skel.people, "MoveNet found nobody in the first frames of the clip"
    with serving(posed) as base:
        status, body = get_json(base + "/api/cameras")
        status_v, headers, jpeg = get(f"{base}/api/cameras/{CAMERA}/view.jpg")
    assert status == 200
    (cam,) = body["cameras"]
    assert cam["id"] == CAMERA and cam["seq"] == 7 and cam["people"] == len(skel.people)
    assert cam["fps"] == 30.0 and cam["view"] == f"/api/cameras/{CAMERA}/view.jpg" and cam["age_s"] >= 0
    assert status_v == 200 and headers["content-type"] == "image/jpeg"
    assert headers["cache-control"] == "no-store"
    view = _decode(jpeg)
    assert view.shape == raw.shape == (240, 320, 3)
    assert _drawn_at_joints(view, raw, skel.people[0]) > 0.8


def test_without_recent_frames_the_view_pairs_the_frames_and_skeletons_streams(r, redis_url, movenet,
                                                                              tmp_path):
    pl.publish(redis_url, frames=6)
    pl.run_pose(redis_url, movenet, snapshot_frames=0)
    pl.publish(redis_url, frames=2)  # the producer goes on (frames 6 and 7): the pose stage is behind
    assert r.xlen(keys.recent_frames_stream(CAMERA)) == 0
    (_, fields), = [e for e in r.xrevrange(keys.skeletons_stream(CAMERA), count=2) if b"people" in e[1]]
    skel = codec.decode_skeletons(fields)
    frame = next(m for m in (codec.decode_frame(f) for _, f in r.xrevrange(keys.frames_stream(CAMERA)))
                 if hasattr(m, "jpeg"))
    assert (frame.seq, skel.seq) == (7, 5) and skel.people
    with serving(pl.settings(redis_url, data_dir=tmp_path)) as base:
        status, _, jpeg = get(f"{base}/api/cameras/{CAMERA}/view.jpg")
        _, body = get_json(base + "/api/cameras")
    assert status == 200 and body["cameras"][0]["seq"] == 7
    assert _drawn_at_joints(_decode(jpeg), codec.decode_jpeg(frame), skel.people[0]) > 0.8


def test_current_labels_and_the_alert_banner_come_from_scores_and_events(r, posed):
    skel, raw = _newest_posed(r)
    track = skel.people[0].track_id
    r.xadd(keys.scores_stream(CAMERA), {"track_id": track, "frame_start": 0, "frame_end": 6,
                                        "label": "falling", "score": "0.8700"})
    with serving(posed) as base:
        _, before = get(f"{base}/api/cameras/{CAMERA}/view.jpg")[1:]
        assert pl.write_event(r, pl.falling(frame_end=6, track=track))
        _, body = get_json(base + "/api/cameras")
        _, after = get(f"{base}/api/cameras/{CAMERA}/view.jpg")[1:]
    assert body["cameras"][0]["labels"] == {str(track): {"label": "falling", "score": 0.87,
                                                         "text": f"#{track} falling 0.87"}}
    red = np.array([0, 0, 200])  # the banner's colour (BGR)
    def red_share(jpeg):  # of the top rows
        return float((np.abs(_decode(jpeg)[2:16].astype(int) - red).sum(axis=2) < 80).mean())

    assert red_share(before) < 0.1 and red_share(after) > 0.6


@pytest.mark.parametrize("camera, status", [("cam-none", 404), ("bad..id!", 400)])
def test_a_camera_without_frames_or_with_a_bad_id_has_no_view(r, redis_url, tmp_path, camera, status):
    with serving(pl.settings(redis_url, data_dir=tmp_path)) as base:
        code, _, body = get(f"{base}/api/cameras/{camera}/view.jpg")
    assert code == status and json.loads(body)["detail"]


def test_a_corrupt_newest_frame_is_no_view_and_the_rest_of_the_page_goes_on(r, posed):
    skel, _ = _newest_posed(r)
    bad = dataclasses.replace(skel, seq=8)
    r.xadd(keys.recent_frames_stream(CAMERA), {**codec.encode_skeletons(bad), "jpeg": b"\xff\xd8not a jpeg"})
    with serving(posed) as base:
        code, _, body = get(f"{base}/api/cameras/{CAMERA}/view.jpg")
        status, cams = get_json(base + "/api/cameras")
    assert code == 404 and b"unreadable" in body
    assert status == 200 and cams["cameras"][0]["seq"] == 8


@pytest.fixture
def history(tmp_path, redis_url):
    from workers.history.store import EventStore

    s = pl.settings(redis_url, data_dir=tmp_path, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                    snapshots_dir=tmp_path / "snaps")
    store = EventStore(s.history_url, s.snapshots_dir)
    yield s, store
    store.close()


def test_events_merge_the_history_and_the_stream_newest_first_with_snapshots(r, history):
    s, store = history
    only_stored, both, only_streamed = (pl.falling(frame_end=n, emitted=1.0e9 + n) for n in (100, 200, 300))
    other = pl.falling(frame_end=50, camera="cam-b", emitted=1.0e9 + 400)
    store.add(only_stored, b"\xff\xd8picture\xff\xd9")
    store.add(both)
    for e in (both, only_streamed, other):
        assert pl.write_event(r, e)
    r.xadd(keys.EVENTS_STREAM, {"event": b"{not json"})  # an unreadable entry is skipped
    with serving(s) as base:
        _, body = get_json(base + "/api/events")
        _, only_cam = get_json(f"{base}/api/events?camera={CAMERA}&limit=2")
        _, fallen = get_json(base + "/api/events?label=fallen")
        _, recent = get_json(f"{base}/api/events?after={1.0e9 + 250}")
        bad = get(base + "/api/events?since=yesterday")
        code, _, picture = get(base + f"/snapshots/{only_stored.id}.jpg")
    ids = [e["id"] for e in body["events"]]
    assert ids == [other.id, only_streamed.id, both.id, only_stored.id]
    rows = {e["id"]: e for e in body["events"]}
    assert rows[only_stored.id]["snapshot"] == f"/snapshots/{only_stored.id}.jpg"
    assert rows[both.id]["snapshot"] is None and rows[other.id]["camera"] == "cam-b"
    assert codec.decode_event(json.dumps({k: v for k, v in rows[both.id].items() if k != "snapshot"})) == both
    assert [e["id"] for e in only_cam["events"]] == [only_streamed.id, both.id]
    assert fallen["events"] == []
    assert [e["id"] for e in recent["events"]] == [other.id, only_streamed.id]
    assert bad[0] == 400 and b"since" in bad[2]
    assert code == 200 and picture == b"\xff\xd8picture\xff\xd9"


@pytest.mark.parametrize("path", ["/snapshots/unknown.jpg", "/snapshots/..%2Fh.db.jpg",
                                  "/snapshots/%2e%2e.jpg"])
def test_snapshots_of_unknown_or_unsafe_ids_are_not_found(r, history, path):
    with serving(history[0]) as base:
        assert get(base + path)[0] == 404


def _sse(base: str, headers: dict | None = None):
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", "/api/events/live", headers=headers or {})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
    return conn, resp


def _next_message(resp, kind: str) -> dict:
    """The next server-sent message of ``kind`` (its fields), skipping comments and others."""
    fields: dict = {}
    while True:
        line = resp.readline().decode()
        assert line, "the live stream ended"
        line = line.rstrip("\n")
        if not line:
            if fields.get("event") == kind:
                return fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")


def test_live_events_arrive_as_they_are_written_and_resume_after_a_reconnect(r, history):
    s, store = history
    first, second = pl.falling(frame_end=100), pl.falling(frame_end=160)
    with serving(s) as base:
        conn, resp = _sse(base)
        _next_message(resp, "ready")
        store.add(first, b"\xff\xd8snap\xff\xd9")  # the history stored it before the page heard of it
        assert pl.write_event(r, first)
        msg = _next_message(resp, "event")
        conn.close()
        row = json.loads(msg["data"])
        assert row["id"] == first.id and row["snapshot"] == f"/snapshots/{first.id}.jpg"
        assert re.fullmatch(r"\d+-\d+", msg["id"])
        assert pl.write_event(r, second)  # while the page was away
        conn, resp = _sse(base, {"Last-Event-ID": msg["id"]})
        _next_message(resp, "ready")
        again = json.loads(_next_message(resp, "event")["data"])
        conn.close()
    assert again["id"] == second.id and again["snapshot"] is None


def test_health_shows_heartbeats_and_stream_lags_as_status_does(r, posed):
    heartbeat.beat(r, "pose-test", "pose", {"frames": 8, "state": "running"}, [CAMERA], at=1.0e9,
                   ttl_s=60)
    with serving(posed) as base:
        status, h = get_json(base + "/api/health")
    assert status == 200
    (w,) = [w for w in h["workers"] if w.get("worker") == "pose-test"]
    assert w["stage"] == "pose" and w["cameras"] == [CAMERA] and w["age_s"] > 0
    cam = h["cameras"][CAMERA]
    assert cam["pose_lag"] == 0 and cam["skeletons_len"] == 9  # 8 frames and the end of stream
    assert h["unowned_cameras"] == [CAMERA] and h["ok"] is False  # the workers are gone
    assert h["dead_letters"] == 0


def test_with_redis_unreachable_the_page_loads_and_the_api_says_so(tmp_path):
    from workers.web.server import free_port

    s = pl.settings(f"redis://127.0.0.1:{free_port('127.0.0.1', 0)}/0", data_dir=tmp_path)
    with serving(s) as base:
        page = get(base + "/")
        status, body = get_json(base + "/api/health")
        cams = get(base + "/api/cameras")[0]
    assert page[0] == 200
    assert status == cams == 503 and body["error"].startswith("redis unreachable")


def test_a_view_says_in_its_header_what_is_drawn_on_it_the_labels_the_cameras_list_has(r, redis_url,
                                                                                       tmp_path):
    """The picture and the page's footer take a track's label from one place: the view's
    X-View header holds the labels drawn on that very JPEG (rendering them again gives the
    same bytes), and /api/cameras has the same labels and captions for the same frame."""
    from workers.web import view

    skel = pl.posed_frame(r, seq=10, value=40)
    pl.score(r, "falling", 0.98, frame_end=8)
    pl.score(r, "not-falling", 0.9712, frame_end=10)  # the newest window up to the frame
    pl.score(r, "falling", 0.99, frame_end=12)  # a window after the frame shown: not its label
    with serving(pl.settings(redis_url, data_dir=tmp_path)) as base:
        status, headers, jpeg = get(f"{base}/api/cameras/{CAMERA}/view.jpg")
        _, body = get_json(base + "/api/cameras")
    assert status == 200
    drawn = json.loads({k.lower(): v for k, v in headers.items()}["x-view"])
    assert drawn == {"seq": 10, "people": 1,
                     "labels": {"1": {"label": "not-falling", "score": 0.9712,
                                      "text": "#1 not-falling 0.97"}}}
    (cam,) = body["cameras"]
    assert (cam["seq"], cam["people"], cam["labels"]) == (drawn["seq"], drawn["people"], drawn["labels"])
    (_, fields), = r.xrevrange(keys.recent_frames_stream(CAMERA), count=1)
    raw = _decode(fields[b"jpeg"])
    labels = {int(t): (v["label"], v["score"]) for t, v in drawn["labels"].items()}
    assert view.render_view(raw, skel.people, labels, []) == jpeg  # exactly what was drawn


def test_replay_jobs_are_listed_from_the_jobs_registry_newest_first(r, redis_url, tmp_path):
    from workers.jobs import registry
    from workers.jobs.replay import JobSpec

    settings = pl.settings(redis_url, data_dir=tmp_path)
    with serving(settings) as base:
        assert get_json(base + "/api/replays") == (200, {"jobs": []})
        older = JobSpec(job="j1", camera="cam-a", source="video", target="pose", path="a.mp4", created=100.0)
        newer = JobSpec(job="j2", camera="cam-b", source="video", target="pose", path="b.mp4", created=200.0)
        for spec in (older, newer):
            registry.register(r, spec)
        registry.set_state(r, "j1", "DONE", events=3)
        registry.set_state(r, "j2", "RUNNING", total=200)
        r.hset(keys.JOBS_KEY, "j0", "{not json")  # one bad entry hides no other job
        r.hset(keys.job_checkpoint_key(newer.replay_camera), mapping={"seq": 79, "published": 80})
        status, body = get_json(base + "/api/replays")
    assert status == 200
    got = [(j["id"], j["camera"], j["replayed"], j["source"], j["state"], j["published"], j["total"],
            j["progress"], j["events"]) for j in body["jobs"]]
    assert got == [("j2", "cam-b~j2", "cam-b", "b.mp4", "RUNNING", 80, 200, 0.4, None),
                   ("j1", "cam-a~j1", "cam-a", "a.mp4", "DONE", 0, None, 1.0, 3)]


def test_the_page_and_its_assets_are_served_by_the_app_and_name_nothing_elsewhere(r, redis_url, tmp_path):
    from workers.web.app import STATIC

    with serving(pl.settings(redis_url, data_dir=tmp_path)) as base:
        status, headers, html = get(base + "/")
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html.decode())
        served = {a: get(base + a) for a in assets}
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert sorted(assets) == ["/static/app.js", "/static/style.css"]
    assert "javascript" in served["/static/app.js"][1]["content-type"]
    assert served["/static/style.css"][1]["content-type"].startswith("text/css")
    assert all(code == 200 and body for code, _, body in served.values())
    for path in STATIC.iterdir():  # no CDN, no web font, no external URL at all
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), path
