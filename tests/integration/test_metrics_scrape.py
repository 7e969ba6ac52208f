"""A real pose worker process with --metrics-port: frames from a real clip go through it,
its /metrics is read over HTTP and parsed, and the counters match what went through;
`actionstream status` reads the same numbers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from producer.producer import Producer
from shared import codec, keys
from shared.ops import status
from shared.redisio import ensure_group
from shared.schemas import Frame
from shared.settings import load_settings, make_camera
from tests.conftest import shared_path
from tests.procs import wait_until
from tests.webhook_receiver import WebhookReceiver, planned

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CAM, FRAMES = "cam-metrics", 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _samples(url: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics and parse it with prometheus_client's parser: (name, labels) -> value."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _get(samples, name, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _scrape_or_empty(url: str) -> dict:
    try:
        return _samples(url)
    except OSError:  # not serving yet
        return {}


@pytest.fixture
def pose_worker(redis_url):
    port = _free_port()
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_SHARED_DIR=str(shared_path()),
               ACTIONSTREAM_THREADS="2", ACTIONSTREAM_BATCH_PER_CAMERA="4", ACTIONSTREAM_LEASE_TTL_S="2")
    proc = subprocess.Popen([sys.executable, "-m", "workers", "pose-worker", "--cameras", CAM,
                             "--mode", "replay", "--pose-model", "movenet", "--metrics-port", str(port)],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        yield proc, f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_pose_worker_process_counts_what_went_through(r, redis_url, pose_worker):
    proc, url = pose_worker
    stream = keys.frames_stream(CAM)
    ensure_group(r, stream, keys.POSE_GROUP)
    r.xadd(stream, codec.encode_frame(Frame(CAM, 0, 1.0, 320, 240, b"\xff\xd8\xff\xe0garbage")))
    r.xadd(stream, {"garbage": "yes"})
    settings = load_settings(redis_url=redis_url, mode="replay", replay_max_lag=10_000)
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    Producer(settings, make_camera(id=CAM, source=video, crop=(320, 0, 320, 240))).run(max_frames=FRAMES)
    published = r.hget(keys.producer_key(CAM), "seq")
    assert int(published) == FRAMES

    def done():
        s = _scrape_or_empty(url)
        return s if _get(s, "actionstream_frames_out_total", stage="pose", camera=CAM) == FRAMES + 1 else None

    samples = wait_until(done, timeout=120, step=0.2)  # FRAMES frames and the end-of-stream mark
    assert samples, f"the worker did not process {FRAMES} frames (exit code {proc.poll()}): " \
                    f"{proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ''}"
    assert len([e for _, e in r.xrange(keys.skeletons_stream(CAM))]) == FRAMES + 1
    assert _get(samples, "actionstream_frames_in_total", stage="pose", camera=CAM) == FRAMES + 3
    assert _get(samples, "actionstream_dead_letters_total", stage="pose", reason="bad_image") == 1
    assert _get(samples, "actionstream_dead_letters_total", stage="pose", reason="undecodable") == 1
    assert _get(samples, "actionstream_leases_held", stage="pose") == 1
    model = (("model", "movenet"), ("stage", "pose"))
    calls = samples[("actionstream_inference_seconds_count", model)]
    assert 1 <= calls < FRAMES  # batched: fewer model calls than frames
    assert samples[("actionstream_inference_batch_size_sum", model)] == FRAMES
    assert samples[("actionstream_inference_seconds_sum", model)] > 0
    assert samples[("actionstream_batch_size_sum", (("stage", "pose"),))] >= FRAMES + 3

    # `actionstream status` finds the worker through its heartbeat and reads the same numbers
    st = wait_until(lambda: next((m for m in status(r)["metrics"].values() if m.get("url") == url), None),
                    timeout=30)
    assert st and "error" not in st, st
    assert st["samples"][f'actionstream_frames_out_total{{camera="{CAM}",stage="pose"}}'] == FRAMES + 1
    assert st["samples"]['actionstream_leases_held{stage="pose"}'] == 1


def test_up_gives_each_child_a_metrics_port_of_its_own_and_prints_it(redis_url):
    """`up --metrics`: every child serves /metrics on its own free port, printed at the start;
    the pose worker's page counts the frames it processed."""
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    env = dict(os.environ, ACTIONSTREAM_SHARED_DIR=str(shared_path()), ACTIONSTREAM_THREADS="2")
    proc = subprocess.Popen([sys.executable, "-m", "workers", "up", "--no-progress", "--metrics",
                             "--redis", redis_url, "--source", video, "--camera", "cam-up",
                             "--crop", "320,0,320,240", "--fps", "15", "--pose-only"],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        urls = dict(proc.stdout.readline().strip().removeprefix("metrics of ").split(": ") for _ in range(2))
        assert set(urls) == {"producer[cam-up]", "pose-worker"}, urls
        assert len(set(urls.values())) == 2
        pose = urls["pose-worker"]

        def processed():
            samples = _scrape_or_empty(pose)
            return _get(samples, "actionstream_frames_out_total", stage="pose", camera="cam-up")

        assert wait_until(lambda: (processed() or 0) >= 5, timeout=120, step=0.2)
        producer = _samples(urls["producer[cam-up]"])
        assert _get(producer, "actionstream_frames_out_total", stage="producer", camera="cam-up") >= 5
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_alerts_worker_counts_task_outcomes(r, redis_url):
    """The forwarder counts the tasks it queued; a real Celery worker process counts a delivery
    that succeeds, one retried after a 503, one refused for good (404) on its /metrics."""
    from shared.schemas import Event
    from shared.settings import Settings
    from workers.alerting import service as alerts

    hooks = WebhookReceiver(planned({"/ok": [200], "/flaky": [503, 200], "/gone": [404]}))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url)
    proc = subprocess.Popen([sys.executable, "-m", "workers", "alerts-worker", "--concurrency", "2",
                             "--metrics-port", str(port)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        app = alerts.make_app(Settings(redis_url=redis_url))
        ev = Event(camera="cam-1", track_id=1, label="falling", label_index=1, score=0.9, frame_start=0,
                   frame_end=47, ts_start=0.0, ts_end=1.6, model="fall", emitted_at=2.0)
        r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(ev)})
        queued = REGISTRY.get_sample_value("actionstream_alert_tasks_queued_total") or 0.0
        webhooks = [hooks.url(p) for p in ("/ok", "/flaky", "/gone")]
        assert alerts.forward_events(r, app, webhooks, burst=True, block_ms=200) == 3
        assert REGISTRY.get_sample_value("actionstream_alert_tasks_queued_total") == queued + 3

        def outcomes():
            s = _scrape_or_empty(url)
            got = {o: _get(s, "actionstream_celery_tasks_total", task=alerts.DELIVER_TASK, outcome=o)
                   for o in ("success", "retry", "failure")}
            return got if got == {"success": 2, "retry": 1, "failure": 1} else None

        assert wait_until(outcomes, timeout=120, step=0.3), _scrape_or_empty(url)
    finally:
        hooks.server.shutdown()
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("command", [["alerts-worker"], ["alerts", "--webhook", "http://127.0.0.1:9/x"]])
def test_a_taken_metrics_port_is_one_line_and_exit_2(command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "workers", *command, "--redis", "redis://127.0.0.1:1/0",
                               "--metrics-port", str(port)], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in lines[0], done.stderr
