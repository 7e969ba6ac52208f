"""The web page in a real headless Chromium (Debian's package, driven by Playwright): a real
clip through the real pose (and action) workers, the web and history processes on a real
Redis; the page shows the live frame and the events raised during the test, with their
snapshots. And `up` prints and serves the page, and leaves nothing running."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared import codec, keys
from tests.conftest import ROOT, shared_path
from tests.procs import MARKER_VAR, family, new_marker, wait_gone, wait_pids_gone, wait_until
from tests.workers.web import pipeline as pl
from tests.workers.web.pipeline import CAMERA
from workers.web.server import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SHOTS_ENV = "ACTIONSTREAM_WEB_SHOTS"  # a folder: the screenshots are copied there too
WAIT_MS = 120_000

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is absent: the browser tests need Debian's chromium "
                              "(apt-get install -y chromium; .ci/run installs it)"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc"),
]


@contextmanager
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is absent")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = b.new_page(viewport={"width": 1280, "height": 820})
            errors: list[str] = []  # script errors, and any request leaving this host (it works offline)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route(re.compile(r"^(?!http://127\.0\.0\.1[:/])"),
                       lambda route: (errors.append(f"request to {route.request.url}"), route.abort()))
            yield page, errors
        finally:
            b.close()


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get(SHOTS_ENV):
        Path(os.environ[SHOTS_ENV]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ[SHOTS_ENV]) / name)
    return path


LIVE_FRAME = """(camera) => {
  const img = document.querySelector(`#grid img[data-camera="${camera}"]`);
  return img !== null && img.complete && img.naturalWidth > 0;
}"""
BANNER = """(camera) => {
  const img = document.querySelector(`#grid img[data-camera="${camera}"]`);
  if (img === null || !img.complete || img.naturalWidth === 0) return false;
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 2, canvas.width, 12).data;
  let red = 0;
  for (let i = 0; i < px.length; i += 4) red += px[i] > 150 && px[i + 1] < 70 && px[i + 2] < 70;
  return red > 0.6 * (px.length / 4);
}"""
SNAPSHOT = """(id) => {
  const img = document.querySelector(`#events li[data-event="${id}"] img`);
  return img !== null && img.complete && img.naturalWidth > 0;
}"""


def _posed_page(page, url: str, redis_url: str, frames: int) -> None:
    """Open the page, then run the clip's first ``frames`` frames through the pose worker:
    the camera appears with its live view."""
    page.goto(url)
    page.wait_for_selector("#no-cameras", state="visible")
    pl.publish(redis_url, frames=frames)
    pl.run_pose(redis_url, pl.load_movenet())
    page.wait_for_function(LIVE_FRAME, arg=CAMERA, timeout=WAIT_MS)
    foot = page.locator(f'#grid article[data-camera="{CAMERA}"] .foot')
    foot.filter(has_text=f"frame {frames - 1}").wait_for(timeout=WAIT_MS)


def _event_with_snapshot(page, event_id: str) -> str:
    """Wait for the event in the timeline and for its snapshot; the item's text."""
    item = page.locator(f'#events li[data-event="{event_id}"]')
    item.wait_for(timeout=WAIT_MS)
    page.wait_for_function(SNAPSHOT, arg=event_id, timeout=WAIT_MS)  # drawn by the history process
    assert item.locator("img").get_attribute("src") == f"/snapshots/{event_id}.jpg"
    return item.inner_text()


def test_the_page_shows_the_live_frame_and_an_event_raised_with_its_snapshot(r, redis_url, tmp_path):
    env = pl.web_env(redis_url, tmp_path)
    with pl.process(["history"], env, ready=r"storing events"), \
            pl.process(["web", "--port", "0", "--no-auth"], env, ready=r"page is at (\S+)") as (_, _, url), \
            browser() as (page, errors):
        _posed_page(page, url.group(1), redis_url, frames=60)
        _shot(page, tmp_path, "web-live.png")
        event = pl.falling(frame_end=55, emitted=time.time())
        assert pl.write_event(r, event)  # as the action worker writes it: stream and channel
        text = _event_with_snapshot(page, event.id)
        assert "FALLING" in text and CAMERA in text and "frames 8–55" in text and "track #1" in text
        page.wait_for_selector(f'#streams td:text-is("{CAMERA}")')
        _shot(page, tmp_path, "web-event.png")
        assert not errors, errors
    assert (tmp_path / "snapshots" / f"{event.id}.jpg").is_file()


def test_the_page_during_a_fall(r, redis_url, tmp_path):
    """The clip until just after the fall (while MoveNet still sees her) through the real
    pose and action workers: the falling event the action worker raises shows up with its
    snapshot, and the live view shows her down with the label and the alert drawn (the
    README's screenshot)."""
    env = pl.web_env(redis_url, tmp_path)
    with pl.process(["history"], env, ready=r"storing events"), \
            pl.process(["web", "--port", "0", "--no-auth"], env, ready=r"page is at (\S+)") as (_, _, url), \
            browser() as (page, errors):
        _posed_page(page, url.group(1), redis_url, frames=127)  # MoveNet loses her later
        pl.run_action(redis_url)
        (raw,) = [f[b"event"] for _, f in r.xrange(keys.EVENTS_STREAM)]
        event = codec.decode_event(raw)
        assert event.label == "falling" and event.camera == CAMERA
        assert "FALLING" in _event_with_snapshot(page, event.id)
        tile = page.locator(f'#grid article[data-camera="{CAMERA}"]')
        tile.filter(has_text="falling").wait_for(timeout=WAIT_MS)  # the track's current label
        page.wait_for_function(BANNER, arg=CAMERA, timeout=WAIT_MS)  # the alert drawn on the live view
        _shot(page, tmp_path, "web-fall.png")
        assert not errors, errors


def _up(video: Path, marker: str, tmp: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    env.update({MARKER_VAR: marker, "TMPDIR": str(tmp), "ACTIONSTREAM_SHARED_DIR": str(shared_path())})
    return subprocess.Popen([sys.executable, "-m", "workers", "up", "--no-progress", "--source",
                             str(video), "--camera", CAMERA, "--crop", "320,0,320,240", "--web-port", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _answers(url: str) -> bool:
    try:
        return pl.get(url + "api/health", timeout=5)[0] == 200
    except OSError:
        return False


def test_up_prints_and_serves_the_page_and_leaves_nothing_running(tmp_path):
    video = shared_path("data", "urfd", "fall-01-cam0.mp4")
    (tmp := tmp_path / "tmp").mkdir()
    marker = new_marker()
    up = _up(video, marker, tmp)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(up.stdout), daemon=True)
    reader.start()
    try:
        url = wait_until(lambda: next((m.group(1) for m in map(re.compile(r"^web page: (\S+)$").search,
                                                                list(lines)) if m), None), 120)
        assert url, "".join(lines)[-3000:]
        assert wait_until(lambda: _answers(url), 120), "".join(lines)[-3000:]  # printed as it starts
        with browser() as (page, errors):
            page.goto(url)
            page.wait_for_function(LIVE_FRAME, arg=CAMERA, timeout=WAIT_MS)
            assert not errors, errors
        started = family(marker) - {up.pid}
        code = up.wait(300)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(60)
    reader.join(10)
    log = "".join(lines)
    assert code == 0, log[-3000:]
    assert re.search(r"\[web\] .*web: stopped", log), log[-3000:]
    assert wait_pids_gone(started, 10.0) == [] and wait_gone(marker, 10.0) == []
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    assert free_port("127.0.0.1", port) == port  # nothing listens there any more
