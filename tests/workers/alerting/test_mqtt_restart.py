"""Open MQTT incidents outlive the forwarder: `actionstream alerts` killed (SIGKILL) during an
incident and started again still publishes its ``end`` and sets the retained count back to 0
(the incidents are kept in Redis), against the local Mosquitto and a real Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from shared import keys
from tests.conftest import ROOT
from tests.workers.alerting import test_mqtt_alerts as base
from workers.alerting import service as alerts


def _start(redis_url: str, broker: str, prefix: str, log) -> subprocess.Popen:
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_MQTT_TOPIC_PREFIX=prefix,
               ACTIONSTREAM_MQTT_END_AFTER_S="3", ACTIONSTREAM_LOG_LEVEL="INFO",
               ACTIONSTREAM_MQTT_DISCOVERY="false")
    with open(log, "a") as fh:
        return subprocess.Popen([sys.executable, "-m", "workers", "alerts", "--mqtt", broker], cwd=ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)


def _wait(what, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout  # a hang guard
    while not what():
        assert time.monotonic() < end
        time.sleep(0.05)


@pytest.mark.integration
def test_an_incident_open_at_a_kill_ends_after_the_restart(r, redis_url, tmp_path):
    try:
        socket.create_connection(base.BROKER, timeout=2).close()
    except OSError as exc:
        pytest.skip(f"no MQTT broker on {base.BROKER} ({exc})")
    broker = f"mqtt://{base.BROKER[0]}:{base.BROKER[1]}"
    prefix = f"actionstream-test-{uuid.uuid4().hex[:10]}"
    sub = base.Subscriber(prefix)
    log = tmp_path / "alerts.log"
    proc = _start(redis_url, broker, prefix, log)
    try:
        _wait(lambda: sub.last("available") == "online")
        falling = base.ev()
        base.write(r, falling)
        _wait(lambda: sub.last("cam-1/falling") == "1")
        _wait(lambda: r.xpending(keys.EVENTS_STREAM, alerts.ALERTS_GROUP)["pending"] == 0)  # acked
        proc.send_signal(signal.SIGKILL)  # no clean stop: the incident is open, its end not yet due
        proc.wait(timeout=30)
        assert [m["type"] for m in sub.events()] == ["new"]
        (stored,) = r.keys(keys.mqtt_incidents_key("*"))  # the open incident, kept in Redis
        assert r.hlen(stored) == 1

        proc = _start(redis_url, broker, prefix, log)
        _wait(lambda: [m["type"] for m in sub.events()] == ["new", "end"], timeout=60)
        assert {m["after"]["id"] for m in sub.events()} == {falling.id}
        _wait(lambda: sub.last("cam-1/falling") == "0")
        assert r.keys(keys.mqtt_incidents_key("*")) == []  # ended: nothing left behind
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
