"""The pure parts of running on a Redis Cluster: the URL, slot ranges, grouping keys by the
node (or slot) that serves them, and Celery's broker when the streams are on a cluster."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from shared import keys
from shared.redis_server import CLUSTER_SLOTS, slot_ranges
from shared.redisio import group_by_node, is_cluster_url, parse_cluster_url, redact
from shared.settings import SettingsError, check_redis_url, load_settings


@pytest.mark.parametrize("url, nodes, opts, error", [
    ("redis+cluster://10.0.0.1:7000", [("10.0.0.1", 7000)], {"ssl": False}, None),
    ("redis+cluster://a:7000,b:7001,c:7002", [("a", 7000), ("b", 7001), ("c", 7002)], {"ssl": False}, None),
    ("rediss+cluster://u:p%40ss@a:7000,b:7001", [("a", 7000), ("b", 7001)],
     {"ssl": True, "username": "u", "password": "p@ss"}, None),
    ("redis+cluster://:secret@a:7000/0", [("a", 7000)],
     {"ssl": False, "username": None, "password": "secret"}, None),
    ("redis+cluster://a", None, None, "is not HOST:PORT"),
    ("redis+cluster://a:7000,,b:7001", None, None, "is not HOST:PORT"),
    ("redis+cluster://a:notaport", None, None, "is not HOST:PORT"),
    ("redis://a:7000", None, None, r"expected redis\+cluster://"),
])
def test_parse_cluster_url(url, nodes, opts, error):
    if error:
        with pytest.raises(ValueError, match=error):
            parse_cluster_url(url)
        return
    assert parse_cluster_url(url) == (nodes, opts)


@pytest.mark.parametrize("url, error", [
    ("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", None),
    ("rediss+cluster://user:pw@redis-0.svc:6379", None),
    ("redis://127.0.0.1:6379/0", None),
    ("redis+cluster://127.0.0.1", "not a Redis Cluster URL"),
    ("redis+sentinel://127.0.0.1:26379", "not a Redis URL"),
])
def test_check_redis_url_takes_cluster_urls(url, error):
    if error:
        with pytest.raises(ValueError, match=error):
            check_redis_url(url)
    else:
        assert check_redis_url(url) == url


@pytest.mark.parametrize("url, cluster", [
    ("redis+cluster://a:1", True), ("rediss+cluster://a:1", True), ("redis://a:1", False),
    ("rediss://a:1", False), (None, False), ("", False),
])
def test_is_cluster_url(url, cluster):
    assert is_cluster_url(url) is cluster


def test_redact_hides_a_cluster_password():
    assert redact("redis+cluster://u:secret@a:7000,b:7001") == "redis+cluster://u:***@a:7000,b:7001"


@pytest.mark.parametrize("primaries, expected", [
    (1, [(0, 16383)]),
    (3, [(0, 5460), (5461, 10921), (10922, 16383)]),
    (4, [(0, 4095), (4096, 8191), (8192, 12287), (12288, 16383)]),
])
def test_slot_ranges_cover_every_slot_once(primaries, expected):
    ranges = slot_ranges(primaries)
    assert ranges == expected
    assert sum(hi - lo + 1 for lo, hi in ranges) == CLUSTER_SLOTS


def test_slot_ranges_need_a_primary():
    with pytest.raises(ValueError, match="at least one primary"):
        slot_ranges(0)


def _node_of(slot: int, primaries: int = 3) -> int:
    return next(i for i, (lo, hi) in enumerate(slot_ranges(primaries)) if lo <= slot <= hi)


@pytest.mark.parametrize("cameras, expected", [
    # slots: cam-a 3439, cam-4 1855 (node 0); cam-1 6042, cam-2 10233 (node 1); cam-b 15628 (node 2)
    (["cam-a", "cam-1", "cam-b"], [(0, ["cam-a"]), (1, ["cam-1"]), (2, ["cam-b"])]),
    (["cam-1", "cam-a", "cam-2", "cam-4"], [(1, ["cam-1", "cam-2"]), (0, ["cam-a", "cam-4"])]),
    (["cam-b"], [(2, ["cam-b"])]),
    ([], []),
])
def test_group_by_node_keeps_each_node_together_in_order(cameras, expected):
    streams = [keys.frames_stream(c) for c in cameras]
    got = group_by_node(streams, lambda s: _node_of(key_slot(s.encode())))
    assert got == [(node, [keys.frames_stream(c) for c in cams]) for node, cams in expected]


def test_a_cameras_keys_share_one_slot_and_cameras_spread():
    cam = "cam-7"
    per_camera = [keys.frames_stream(cam), keys.skeletons_stream(cam), keys.lease_key("pose", cam),
                  keys.fence_key("pose", cam), keys.tracker_state_key(cam), keys.action_state_key(cam),
                  keys.producer_key(cam), keys.scores_stream(cam), keys.recent_frames_stream(cam)]
    assert len({key_slot(k.encode()) for k in per_camera}) == 1
    slots = group_by_node([keys.frames_stream(f"cam-{i}") for i in range(30)],
                          lambda s: _node_of(key_slot(s.encode())))
    assert len(slots) == 3  # thirty cameras reach every primary of three


@pytest.mark.parametrize("env, broker, error", [
    ({"ACTIONSTREAM_REDIS_URL": "redis://h:6379/0"}, "redis://h:6379/0", None),
    ({"ACTIONSTREAM_REDIS_URL": "redis+cluster://h:7000", "ACTIONSTREAM_BROKER_URL": "redis://b:6379/1"},
     "redis://b:6379/1", None),
    ({"ACTIONSTREAM_REDIS_URL": "redis+cluster://h:7000"}, None, "ACTIONSTREAM_BROKER_URL"),
    ({"ACTIONSTREAM_REDIS_URL": "redis://h:6379", "ACTIONSTREAM_BROKER_URL": "redis+cluster://h:7000"},
     None, "cannot use a Redis Cluster"),
])
def test_celery_broker_is_a_plain_redis(monkeypatch, env, broker, error):
    from workers.alerting.service import celery_config

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    if error:
        with pytest.raises(SettingsError, match=error):
            celery_config(settings)
    else:
        assert celery_config(settings)["broker_url"] == broker


@pytest.mark.parametrize("value, error", [("0", None), ("1", None), ("-1", "greater than or equal to 0"),
                                          ("many", "valid integer")])
def test_wait_replicas_setting(monkeypatch, value, error):
    monkeypatch.setenv("ACTIONSTREAM_REDIS_WAIT_REPLICAS", value)
    if error:
        with pytest.raises(SettingsError, match=f"ACTIONSTREAM_REDIS_WAIT_REPLICAS=.*{error}"):
            load_settings()
    else:
        assert load_settings().redis_wait_replicas == int(value)
