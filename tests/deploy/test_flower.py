"""Flower against the pipeline's broker, as deploy/compose.yaml runs it (`celery -A
workers.alerting.service flower`, the app's JSON-only configuration): a real Redis, a real
`actionstream alerts-worker` and real Flower; Flower's /metrics shows the worker and the
delivery task that ran."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from shared import codec
from shared.redis_server import free_port
from shared.schemas import Event
from shared.settings import Settings
from tests.conftest import ROOT
from tests.procs import wait_until
from tests.webhook_receiver import WebhookReceiver, planned
from workers.alerting import service as alerts

FLOWER_CMD = ["-m", "celery", "-A", "workers.alerting.service", "flower"]  # compose.yaml's, no port


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode()
    except (OSError, urllib.error.URLError):
        return None


def samples(text: str | None, name: str) -> dict[tuple, float]:
    """``{sorted labels: value}`` of the samples called ``name`` in a /metrics text."""
    out = {}
    for family in text_string_to_metric_families(text or ""):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def started(redis_url, tmp_path):
    """Start processes with the broker in their environment; stop them all at the end."""
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_LOG_LEVEL="INFO")
    procs = []

    def start(name: str, argv: list[str]) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "w") as log:
            procs.append(subprocess.Popen([sys.executable] + argv, cwd=ROOT, env=env,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
        return procs[-1]
    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_flower_shows_the_worker_and_a_task_that_ran(r, redis_url, started, tmp_path):
    pytest.importorskip("flower", reason="flower is not installed: pip install 'actionstream[ops]'")
    hooks = WebhookReceiver(planned({"/ok": [200]}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        flower = started("flower", FLOWER_CMD + [f"--port={port}", "--address=127.0.0.1"])
        started("worker", ["-m", "workers", "alerts-worker", "--concurrency", "1"])

        def online() -> dict:
            assert flower.poll() is None, (tmp_path / "flower.log").read_text()[-3000:]
            seen = samples(get(f"{base}/metrics"), "flower_worker_online")
            return {k: v for k, v in seen.items() if v == 1}
        workers = wait_until(online, timeout=25, step=0.3)
        assert workers, "Flower never saw the worker: " + (tmp_path / "flower.log").read_text()[-3000:]
        ((label,),) = workers  # one worker, named celery@<host>
        assert label[0] == "worker" and label[1].startswith("celery@")

        event = Event(camera="cam-1", track_id=1, label="falling", label_index=1, score=0.9,
                      frame_start=0, frame_end=47, ts_start=0.0, ts_end=1.6, model="fall", emitted_at=2.0)
        app = alerts.make_app(Settings(redis_url=redis_url))
        app.send_task(alerts.DELIVER_TASK, args=[codec.event_to_dict(event), hooks.url("/ok")])
        assert hooks.wait("/ok", 1, 200, timeout=20), "the worker did not deliver the task"

        def succeeded() -> dict:
            events = samples(get(f"{base}/metrics"), "flower_events_total")
            return {k: v for k, v in events.items()
                    if dict(k).get("type") == "task-succeeded" and dict(k).get("task") == alerts.DELIVER_TASK}
        done = wait_until(succeeded, timeout=10, step=0.3)
        assert done, "Flower did not show the task: " + str(samples(get(f"{base}/metrics"),
                                                                     "flower_events_total"))
        ((labels, count),) = done.items()
        assert count == 1 and dict(labels)["worker"] == label[1]
        assert get(f"{base}/healthcheck") == "OK"
    finally:
        hooks.server.shutdown()


def test_compose_runs_the_flower_tested_here():
    """deploy/compose.yaml's Flower is this command, on the image with the ops extra, with the
    pipeline's broker in its environment."""
    services = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    flower = services["flower"]
    assert flower["entrypoint"] == ["celery"] + FLOWER_CMD[2:]
    assert flower["build"]["args"]["EXTRA"] == "ops"
    assert flower["environment"]["ACTIONSTREAM_REDIS_URL"] == services["alerts-worker"]["environment"][
        "ACTIONSTREAM_REDIS_URL"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"] and "--port=5555" in flower["command"]  # loopback only
