"""What the page says, in a real headless Chromium (as tests/integration/test_web.py) against
the `actionstream web` process on a real Redis, with posed frames, scores and replay jobs
written as the workers write them: the footer never contradicts the picture beside it, no
badge says `live` while the server does not answer, replay jobs are listed."""

from __future__ import annotations

import signal
import time

from shared import keys
from tests.integration.test_web import CHROMIUM, browser, pytestmark  # noqa: F401  (the skips)
from tests.workers.web import pipeline as pl
from tests.workers.web.pipeline import CAMERA

WAIT_MS = 30_000
WEB = ["web", "--port", "0", "--no-auth"]  # loopback, no login (test_web_login.py logs in)

# [the picture's frame is the bright one, the footer's text]: read together, in one go
SHOWN = """(camera) => {
  const img = document.querySelector(`#grid img[data-camera="${camera}"]`);
  if (img === null || !img.complete || img.naturalWidth === 0) return null;
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(canvas.width - 3, canvas.height - 3, 1, 1).data;  // no drawing there
  const foot = document.querySelector(`#grid article[data-camera="${camera}"] .foot`).innerText;
  return [px[0] > 128, foot];
}"""


def _tile(page):
    return page.locator(f'#grid article[data-camera="{CAMERA}"]')


def test_the_footer_says_the_label_drawn_on_the_picture_beside_it(r, redis_url, tmp_path):
    """Frame 10 (dark) with `#1 falling 0.98`, then frame 20 (bright) with `#1 not-falling
    0.98` written just after the page got its cameras: for as long as the page is watched,
    each time the picture is the bright one the footer says not-falling, and falling while
    it is the dark one (the footer once lagged up to a cameras poll behind the picture)."""
    pl.posed_frame(r, seq=10, value=20)
    pl.score(r, "falling", 0.98, frame_end=10)
    with pl.process(WEB, pl.web_env(redis_url, tmp_path), ready=r"page is at (\S+)") \
            as (_, _, url), browser() as (page, errors):
        page.goto(url.group(1))
        _tile(page).locator(".foot", has_text="#1 falling 0.98").wait_for(timeout=WAIT_MS)
        with page.expect_response(lambda resp: resp.url.endswith("/api/cameras"), timeout=WAIT_MS):
            pass
        pl.posed_frame(r, seq=20, value=235)
        pl.score(r, "not-falling", 0.98, frame_end=20)
        seen, end = [], time.monotonic() + 3.0  # longer than a cameras poll (2 s)
        while time.monotonic() < end:
            seen.append(page.evaluate(SHOWN, CAMERA))
            page.wait_for_timeout(40)
        assert not errors, errors
    bright = [foot for shown, foot in filter(None, seen) if shown]
    dark = [foot for shown, foot in filter(None, seen) if not shown]
    assert bright, seen  # the new frame came while watched
    assert all("#1 not-falling 0.98" in foot and "frame 20" in foot for foot in bright), seen
    assert all("#1 falling 0.98" in foot and "frame 10" in foot for foot in dark), seen


def test_no_camera_is_live_while_the_server_does_not_answer(r, redis_url, tmp_path):
    pl.posed_frame(r, seq=10, value=20)
    with pl.process(WEB, pl.web_env(redis_url, tmp_path), ready=r"page is at (\S+)") \
            as (web, _, url), browser() as (page, errors):
        page.goto(url.group(1))
        badge = _tile(page).locator(".head .badge")
        for _ in range(3):  # a frame of now each second until the page has seen it: live
            pl.posed_frame(r, seq=10, value=20)
            if badge.inner_text() == "live":
                break
            page.wait_for_timeout(1000)
        page.wait_for_function("(id) => document.querySelector(id).textContent === 'live'",
                               arg=f'#grid article[data-camera="{CAMERA}"] .head .badge', timeout=WAIT_MS)
        web.send_signal(signal.SIGTERM)  # the server goes away (as when `up` ends)
        web.wait(30)
        page.locator("#health-badge", has_text="server or Redis unreachable").wait_for(timeout=WAIT_MS)
        page.wait_for_function("(id) => document.querySelector(id).textContent !== 'live'",
                               arg=f'#grid article[data-camera="{CAMERA}"] .head .badge', timeout=WAIT_MS)
        assert badge.inner_text() == "state unknown"
        # they say so together: the header's unreachable and the camera's unknown
        assert "unreachable" in page.locator("#health-badge").inner_text()
        assert not errors, errors


def test_the_replay_panel_lists_the_replay_jobs(r, redis_url, tmp_path):
    from workers.jobs import registry
    from workers.jobs.replay import JobSpec

    spec = JobSpec(job="j7", camera="door", source="video", target="pose", path="/v/door.mp4", created=5.0)
    registry.register(r, spec)
    registry.set_state(r, "j7", "RUNNING", total=50)
    r.hset(keys.job_checkpoint_key(spec.replay_camera), mapping={"seq": 19, "published": 20})
    with pl.process(WEB, pl.web_env(redis_url, tmp_path), ready=r"page is at (\S+)") \
            as (_, _, url), browser() as (page, errors):
        page.goto(url.group(1))
        row = page.locator('#replays-panel tr[data-job="j7"]')
        row.wait_for(timeout=WAIT_MS)
        assert page.locator("#replays-panel").is_visible()
        text = row.inner_text()
        assert "door" in text and "/v/door.mp4" in text and "RUNNING" in text and "40 % (20/50)" in text
        assert not errors, errors
