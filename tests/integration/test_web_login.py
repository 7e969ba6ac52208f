"""The login in a real headless Chromium (as tests/integration/test_web.py) against the
`actionstream web` process with its login on a real Redis: a stranger is sent to the login
form, a wrong password is refused and counted, the right one shows the cameras (their live
pictures too), logging out ends the session (its cookie opens nothing afterwards)."""

from __future__ import annotations

from tests.integration.test_web import CHROMIUM, browser, pytestmark  # noqa: F401  (the skips)
from tests.workers.web import pipeline as pl
from tests.workers.web.pipeline import CAMERA
from tests.workers.web.test_web_auth import request

WAIT_MS = 30_000
PASSWORD = "a-long-admin-password"
LIVE_FRAME = """(camera) => {
  const img = document.querySelector(`#grid img[data-camera="${camera}"]`);
  return img !== null && img.complete && img.naturalWidth > 0;
}"""


def _log_in(page, user: str, password: str) -> None:
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("#login button[type=submit]")


def test_a_stranger_logs_in_sees_the_cameras_and_logs_out(r, redis_url, tmp_path):
    pl.posed_frame(r, seq=10, value=200)
    env = pl.web_env(redis_url, tmp_path, ACTIONSTREAM_WEB_ADMIN_PASSWORD=PASSWORD)
    with pl.process(["web", "--port", "0"], env, ready=r"page is at (\S+)") as (_, _, url), \
            browser() as (page, errors):
        base = url.group(1)
        page.goto(base)
        assert page.url == base + "login"  # sent to the form
        assert page.locator("#grid").count() == 0
        _log_in(page, "admin", "not-the-password")
        page.locator("#error", has_text="wrong user or password (4 tries left this minute)").wait_for(
            timeout=WAIT_MS)
        assert page.url == base + "api/login" and page.locator("#grid").count() == 0
        _log_in(page, "admin", PASSWORD)
        page.wait_for_url(base, timeout=WAIT_MS)
        page.wait_for_function(LIVE_FRAME, arg=CAMERA, timeout=WAIT_MS)  # the view came with the session
        page.locator("#user", has_text="admin (admin)").wait_for(timeout=WAIT_MS)
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "actionstream_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        header = {"Cookie": f"{cookie['name']}={cookie['value']}"}
        assert request(base.rstrip("/"), "GET", "/api/cameras", header)[0] == 200
        page.click("#logout button")
        page.wait_for_url(base + "login", timeout=WAIT_MS)
        assert request(base.rstrip("/"), "GET", "/api/cameras", header)[0] == 401  # the session ended
        page.goto(base)
        assert page.url == base + "login"
        assert not errors, errors
