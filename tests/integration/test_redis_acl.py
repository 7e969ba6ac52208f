"""deploy/redis/users.acl loaded by a real Redis server: each role's real code does its work
as its own user (producer, pose and action workers on a real clip, the history, archive and
alert processes, the web app), and each user is refused outside its role (the web user
cannot XADD frames or DEL a stream; no stage can FLUSHALL; the default user is off)."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest
import redis

from shared import keys
from shared.redis_acl import DEFAULT_ACL, ROLES, render
from shared.redis_server import RedisServer
from tests.conftest import ROOT
from tests.workers.web import pipeline as pl
from tests.workers.web.pipeline import CAMERA

pytestmark = pytest.mark.integration
FRAMES, EVENTS, SKELETONS = keys.frames_stream(CAMERA), keys.EVENTS_STREAM, keys.skeletons_stream(CAMERA)


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory):
    """A real server loading the rendered ACL file; (port, each role's URL)."""
    folder = tmp_path_factory.mktemp("acl")
    passwords = {name: secrets.token_hex(16) for name in (*ROLES, "admin")}
    (folder / "users.acl").write_text(render(DEFAULT_ACL.read_text(), passwords))
    with RedisServer(extra_args=["--aclfile", str(folder / "users.acl")]) as server:
        yield server.port, {n: f"redis://{n}:{p}@127.0.0.1:{server.port}/0" for n, p in passwords.items()}


@pytest.fixture
def urls(acl_server):
    admin = redis.Redis.from_url(acl_server[1]["admin"])
    admin.flushall()
    admin.acl_log_reset()
    yield acl_server[1]
    denied = admin.acl_log(count=20)
    admin.close()
    assert not denied, denied  # nothing a role did in the test was refused


def client(urls, role: str) -> redis.Redis:
    return redis.Redis.from_url(urls[role])


def run(env_url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = pl.web_env(env_url, tmp_path)
    return subprocess.run([sys.executable, "-m", "workers", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_each_role_does_its_work_as_its_own_user(urls, tmp_path):
    pl.publish(urls["producer"], frames=8)
    pl.run_pose(urls["pose"], pl.load_movenet())
    pl.run_action(urls["action"])
    assert pl.write_event(client(urls, "action"), pl.falling(7))  # the action worker's own script
    for role, args in (("history", ["history", "--burst"]), ("archive", ["archive", "--burst"]),
                       ("alerts", ["alerts", "--burst", "--webhook", "http://127.0.0.1:9/hook"])):
        done = run(urls[role], tmp_path, *args)
        assert done.returncode == 0, (role, done.stderr[-3000:])
    with pl.serving(pl.settings(urls["web"], data_dir=tmp_path,
                                history_url=f"sqlite:///{tmp_path / 'history.db'}")) as base:
        for path in ("/api/cameras", f"/api/cameras/{CAMERA}/view.jpg", "/api/events", "/api/health",
                     "/api/replays"):
            status, _, body = pl.get(base + path)
            assert status == 200, (path, body[:300])
        assert pl.get_json(base + "/api/events")[1]["events"]
    admin = client(urls, "admin")
    assert admin.xlen(keys.scores_stream(CAMERA)) >= 0 and admin.xlen(SKELETONS) > 0
    assert admin.xinfo_groups(EVENTS)  # history, archive and alerts read the events as groups


@pytest.mark.parametrize("role, command", [
    ("web", ("XADD", FRAMES, "*", "a", "b")), ("web", ("DEL", EVENTS)), ("web", ("DEL", FRAMES)),
    ("web", ("XGROUP", "DESTROY", FRAMES, "pose")), ("web", ("PUBLISH", keys.EVENTS_CHANNEL, "x")),
    ("web", ("SET", keys.lease_key("pose", CAMERA), "me")),
    ("producer", ("XRANGE", EVENTS, "-", "+")), ("producer", ("XADD", SKELETONS, "*", "a", "b")),
    ("pose", ("XADD", EVENTS, "*", "a", "b")), ("pose", ("DEL", EVENTS)),
    ("action", ("XADD", FRAMES, "*", "a", "b")), ("action", ("DEL", FRAMES)),
    ("history", ("XADD", FRAMES, "*", "a", "b")), ("history", ("DEL", EVENTS)),
    ("archive", ("XADD", EVENTS, "*", "a", "b")), ("archive", ("DEL", FRAMES)),
    ("alerts", ("XADD", EVENTS, "*", "a", "b")), ("alerts", ("XRANGE", FRAMES, "-", "+")),
    *((role, ("FLUSHALL",)) for role in ROLES),
    *((role, ("CONFIG", "SET", "maxmemory", "1")) for role in ROLES),
    *((role, ("ACL", "SETUSER", role, "+@all")) for role in ROLES),
])
def test_each_user_is_refused_outside_its_role(acl_server, role, command):
    with redis.Redis.from_url(acl_server[1][role]) as r:
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.execute_command(*command)


def test_the_default_user_is_off_and_a_wrong_password_opens_nothing(acl_server):
    port = acl_server[0]
    with redis.Redis(port=port) as r, pytest.raises(redis.exceptions.AuthenticationError):
        r.ping()
    with redis.Redis(port=port, username="web", password="wrong") as r, \
            pytest.raises(redis.exceptions.AuthenticationError):
        r.ping()


def test_the_users_come_from_the_settings(acl_server, monkeypatch, tmp_path):
    from shared.redisio import connect
    from shared.settings import load_settings

    port, urls = acl_server
    secret = tmp_path / "redis-web"
    secret.write_text(urls["web"].split(":")[2].split("@")[0] + "\n")
    monkeypatch.setenv("ACTIONSTREAM_REDIS_USERNAME", "web")
    monkeypatch.setenv("ACTIONSTREAM_REDIS_PASSWORD_FILE", str(secret))
    s = load_settings(redis_url=f"redis://127.0.0.1:{port}/0")
    r = connect(s.redis_url)
    assert r.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.xadd(FRAMES, {"a": "b"})
    r.close()
