"""Login for the page and its API, over real HTTP (the app served by uvicorn) on a real Redis,
users in a real SQLite event history: every route of the app's own route table is refused to
a stranger (a route added later without protection fails here), a viewer is refused where an
admin is needed, sessions end at logout and at a new password, failed logins are limited per
address, snapshots cannot be found by guessing ids."""

from __future__ import annotations

import http.client
import json
from contextlib import contextmanager
from typing import Optional
from urllib.parse import urlsplit

import pytest
from starlette.routing import Mount

from tests.workers.web import pipeline as pl
from workers.history.users import UserStore
from workers.web.auth import Auth, LoginLimiter

pytestmark = pytest.mark.integration

ADMIN_PW, VIEWER_PW = "admin-password-1", "viewer-password-1"
PUBLIC = {("GET", "/login"), ("POST", "/api/login"), ("GET", "/api/health")}
VIEWER = {("GET", "/"), ("GET", "/static"), ("GET", "/api/cameras"),
          ("GET", "/api/cameras/{camera}/view.jpg"), ("GET", "/api/events"), ("GET", "/api/events/live"),
          ("GET", "/snapshots/{event_id}.jpg"),
          ("GET", "/api/me"), ("POST", "/api/logout")}
SAMPLE = {"{camera}": "cam-1", "{event_id}": "e1", "{name}": "nobody"}


def request(base: str, method: str, path: str, headers: Optional[dict] = None, body: bytes = b"",
            source: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; a live stream is not read (only its status)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        streaming = resp.getheader("content-type", "").startswith("text/event-stream")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"" if streaming else resp.read()
    finally:
        conn.close()


def login(base: str, user: str, password: str, source: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    return request(base, "POST", "/api/login", {"Content-Type": "application/json"},
                   json.dumps({"user": user, "password": password}).encode(), source)


def refused(status: int, headers: dict, body: bytes) -> bool:
    """Whether the login refused the request (not the route: a failed login is a 401 too)."""
    return (status == 401 and headers.get("www-authenticate", "").startswith("Bearer")) or status == 403


def cookie_of(headers: dict) -> str:
    return headers["set-cookie"].split(";", 1)[0]


@pytest.fixture
def users(tmp_path):
    store = UserStore(f"sqlite:///{tmp_path / 'history.db'}")
    store.add("root", "admin", ADMIN_PW)
    store.add("vera", "viewer", VIEWER_PW)
    yield store
    store.close()


@contextmanager
def app_served(redis_url, tmp_path, users, attempts: int = 5):
    from workers.web.app import create_app

    s = pl.settings(redis_url, data_dir=tmp_path, history_url=f"sqlite:///{tmp_path / 'history.db'}")
    app = create_app(s, auth=Auth(users, attempts=attempts))
    with pl.serve_app(app) as base:
        yield app, base


def routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route of the app's route table."""
    out = []
    for route in app.routes:
        methods = {"GET"} if isinstance(route, Mount) else set(route.methods) - {"HEAD"}
        out += [(m, route.path) for m in sorted(methods)]
    return out


def concrete(path: str) -> str:
    for param, value in SAMPLE.items():
        path = path.replace(param, value)
    return path + "/app.js" if path == "/static" else path


def test_every_route_but_login_and_health_refuses_a_stranger(r, redis_url, tmp_path, users):
    with app_served(redis_url, tmp_path, users) as (app, base):
        table = routes(app)
        assert len(table) >= 14 and PUBLIC | VIEWER <= set(table)
        open_to_strangers = set()
        for method, path in table:
            status, headers, body = request(base, method, concrete(path))
            if (method, path) == ("GET", "/"):
                assert (status, headers.get("location")) == (303, "/login")  # a browser: to the form
            elif refused(status, headers, body):
                assert json.loads(body)["error"].startswith("log in first")
            else:  # a failed login is a 401 too, but no refusal: the route was reached
                open_to_strangers.add((method, path))
    assert open_to_strangers == PUBLIC


def test_a_viewer_is_refused_where_an_admin_is_needed_and_an_admin_nowhere(r, redis_url, tmp_path, users):
    viewer = {"Authorization": "Bearer " + users.new_token("vera")}
    admin = {"Authorization": "Bearer " + users.new_token("root")}
    with app_served(redis_url, tmp_path, users) as (app, base):
        for method, path in routes(app):
            answer = request(base, method, concrete(path), viewer)
            if (method, path) in VIEWER | PUBLIC:
                assert not refused(*answer), (method, path, answer)
            else:
                assert answer[0] == 403 and b"an admin may" in answer[2], (method, path, answer)
            answer = request(base, method, concrete(path), admin)
            assert not refused(*answer), (method, path, answer)


def test_a_session_opens_with_the_right_password_and_ends_at_logout(r, redis_url, tmp_path, users):
    with app_served(redis_url, tmp_path, users) as (_, base):
        assert login(base, "vera", "wrong-password")[0] == 401
        status, headers, body = login(base, "vera", VIEWER_PW)
        assert status == 200 and json.loads(body) == {"user": "vera", "role": "viewer"}
        attrs = [a.strip().lower() for a in headers["set-cookie"].split(";")]
        assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
        assert "secure" not in attrs  # plain HTTP here (tests/workers/web/test_web_tls.py: Secure)
        cookie = {"Cookie": cookie_of(headers)}
        assert request(base, "GET", "/api/cameras", cookie)[0] == 200
        assert json.loads(request(base, "GET", "/api/me", cookie)[2])["user"] == "vera"
        forged = {"Cookie": cookie["Cookie"][:-3] + "abc"}
        assert request(base, "GET", "/api/cameras", forged)[0] == 401
        assert request(base, "POST", "/api/logout", {**cookie, "Content-Type": "application/json"})[0] == 200
        assert request(base, "GET", "/api/cameras", cookie)[0] == 401  # the old cookie opens nothing


def test_a_new_password_ends_the_users_sessions(r, redis_url, tmp_path, users):
    with app_served(redis_url, tmp_path, users) as (_, base):
        cookie = {"Cookie": cookie_of(login(base, "vera", VIEWER_PW)[1])}
        assert request(base, "GET", "/api/events", cookie)[0] == 200
        users.set_password("vera", "another-password")
        assert request(base, "GET", "/api/events", cookie)[0] == 401
        assert login(base, "vera", VIEWER_PW)[0] == 401


def test_a_revoked_token_opens_nothing(r, redis_url, tmp_path, users):
    token = {"Authorization": "Bearer " + users.new_token("vera", "script")}
    with app_served(redis_url, tmp_path, users) as (_, base):
        assert request(base, "GET", "/api/events", token)[0] == 200
        assert users.revoke_tokens("vera") == 1
        assert request(base, "GET", "/api/events", token)[0] == 401


def test_the_nth_failed_login_of_an_address_is_refused_without_checking_the_password(r, redis_url, tmp_path,
                                                                                      users):
    with app_served(redis_url, tmp_path, users, attempts=3) as (_, base):
        for left in (2, 1, 0):
            status, _, body = login(base, "root", "guess")
            assert status == 401 and f"{left} tries left" in json.loads(body)["error"]
        status, headers, body = login(base, "root", ADMIN_PW)  # the right one, unchecked
        assert status == 429 and 0 < int(headers["retry-after"]) <= 61, body
        assert "set-cookie" not in headers
        assert login(base, "root", ADMIN_PW, source="127.0.0.2")[0] == 200  # another address may


def test_the_login_limit_forgets_failures_older_than_its_window():
    now = [0.0]
    limiter = LoginLimiter(2, window_s=60, clock=lambda: now[0])
    limiter.failed("a")
    now[0] = 30.0
    limiter.failed("a")
    assert limiter.retry_after("a") == pytest.approx(30.0) and limiter.retry_after("b") == 0
    now[0] = 60.5
    assert limiter.retry_after("a") == 0 and limiter.left("a") == 1


def test_a_stranger_learns_nothing_of_the_snapshots_by_guessing_ids(r, redis_url, tmp_path, users):
    from workers.history.store import EventStore

    store = EventStore(f"sqlite:///{tmp_path / 'history.db'}", tmp_path / "snapshots")
    event = pl.falling(47)
    store.add(event, b"\xff\xd8 a jpeg")
    token = {"Authorization": "Bearer " + users.new_token("vera")}
    with app_served(redis_url, tmp_path, users) as (_, base):
        known = request(base, "GET", f"/snapshots/{event.id}.jpg")
        unknown = request(base, "GET", "/snapshots/0123456789abcdef.jpg")
        assert known[0] == unknown[0] == 401 and known[2] == unknown[2]
        assert request(base, "GET", f"/snapshots/{event.id}.jpg", token)[0] == 200
        assert request(base, "GET", "/snapshots/0123456789abcdef.jpg", token)[0] == 404
    store.close()


def test_health_tells_a_stranger_only_whether_all_is_well(r, redis_url, tmp_path, users):
    token = {"Authorization": "Bearer " + users.new_token("vera")}
    with app_served(redis_url, tmp_path, users) as (_, base):
        status, _, body = request(base, "GET", "/api/health")
        assert status == 200 and set(json.loads(body)) == {"ok"}
        assert {"workers", "cameras", "ok"} <= set(json.loads(request(base, "GET", "/api/health", token)[2]))


def test_a_form_login_goes_to_the_page_and_a_wrong_one_back_to_the_form(r, redis_url, tmp_path, users):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with app_served(redis_url, tmp_path, users) as (_, base):
        status, _, body = request(base, "POST", "/api/login", form, b"user=root&password=nope")
        assert status == 401 and b"wrong user or password" in body and b"<form" in body
        right = f"user=root&password={ADMIN_PW}".encode()
        status, headers, _ = request(base, "POST", "/api/login", form, right)
        assert (status, headers["location"]) == (303, "/")
        assert request(base, "GET", "/", {"Cookie": cookie_of(headers)})[0] == 200
