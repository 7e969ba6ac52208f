"""Home Assistant MQTT discovery against the local Mosquitto (127.0.0.1:1883), with the
`actionstream alerts` process on a real Redis: subscribed as Home Assistant subscribes, the
discovery configs of the registered cameras come (retained) at start and a camera first seen
in an event gets its own; the config's state topic carries the states (its value template,
rendered with Jinja2 as Home Assistant renders it, gives payload_on, then payload_off); its
availability topic goes offline at a clean stop and, as the last will, at a kill."""

from __future__ import annotations

import json
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
from tests.workers.alerting.test_mqtt_alerts import BROKER, Subscriber, ev, write
from workers.alerting.discovery import slug

pytestmark = pytest.mark.integration
LABELS = ("falling", "fallen")


@pytest.fixture
def mqtt_url():
    try:
        socket.create_connection(BROKER, timeout=2).close()
    except OSError as exc:
        pytest.skip(f"no MQTT broker on {BROKER[0]}:{BROKER[1]} ({exc}); install and start mosquitto")
    return f"mqtt://{BROKER[0]}:{BROKER[1]}"


@pytest.fixture
def prefix():
    return f"actionstream-test-{uuid.uuid4().hex[:10]}"


def _alerts(redis_url: str, url: str, topics: str, ha: str, log, **env) -> subprocess.Popen:
    full = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_MQTT_TOPIC_PREFIX=topics,
                ACTIONSTREAM_MQTT_END_AFTER_S="1", ACTIONSTREAM_MQTT_DISCOVERY_PREFIX=ha,
                ACTIONSTREAM_LOG_LEVEL="INFO", **env)
    return subprocess.Popen([sys.executable, "-m", "workers", "alerts", "--mqtt", url], cwd=ROOT,
                            env=full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def _config(ha: Subscriber, node: str, camera: str, label: str) -> dict:
    topic = f"binary_sensor/{node}/{camera}_{label}/config"
    ha.wait(lambda: ha.last(topic))
    return json.loads(ha.last(topic))


def _state(config: dict, payload: str) -> str:
    """The binary sensor's state for a state-topic payload, as Home Assistant works it out."""
    import jinja2

    rendered = jinja2.Environment().from_string(config["value_template"]).render(value=payload).strip()
    assert rendered in (config["payload_on"], config["payload_off"]), rendered
    return "on" if rendered == config["payload_on"] else "off"


def _check_config(cfg: dict, topics: str, camera: str, label: str) -> None:
    node = slug(topics)
    assert cfg["state_topic"] == f"{topics}/{camera}/{label}"
    assert (cfg["availability_topic"], cfg["payload_available"], cfg["payload_not_available"]) == (
        f"{topics}/available", "online", "offline")
    assert cfg["unique_id"] == f"{node}_{camera}_{label}"
    assert cfg["device"]["identifiers"] == [f"{node}_{camera}"] and camera in cfg["device"]["name"]


def test_home_assistant_finds_the_cameras_and_follows_their_states(r, redis_url, mqtt_url, prefix, tmp_path):
    ha_prefix, node = f"{prefix}-ha", slug(prefix)
    r.hset(keys.CAMERAS_KEY, "door-1", json.dumps({"source": "rtsp://door", "mode": "live"}))
    ha, states = Subscriber(ha_prefix), Subscriber(prefix)
    log = open(tmp_path / "alerts.log", "w")
    proc = _alerts(redis_url, mqtt_url, prefix, ha_prefix, log)
    try:
        configs = {label: _config(ha, node, "door-1", label) for label in LABELS}  # registered: at start
        for label, cfg in configs.items():
            _check_config(cfg, prefix, "door-1", label)
        states.wait(lambda: states.last("available") == configs["falling"]["payload_available"])
        late = Subscriber(ha_prefix)  # Home Assistant started later: the configs are retained
        late.wait(lambda: all(late.last(f"binary_sensor/{node}/door-1_{label}/config") for label in LABELS))
        assert all(retain for _, _, retain in late.messages)
        late.close(clear_retained=False)

        write(r, ev())  # a camera first seen in an event gets its sensors too
        cfg = _config(ha, node, "cam-1", "falling")
        _check_config(cfg, prefix, "cam-1", "falling")
        topic = cfg["state_topic"].removeprefix(prefix + "/")
        states.wait(lambda: states.last(topic) is not None and _state(cfg, states.last(topic)) == "on")
        states.wait(lambda: _state(cfg, states.last(topic)) == "off", timeout=60)  # the incident ended

        proc.send_signal(signal.SIGTERM)  # a clean stop: offline
        assert proc.wait(timeout=30) == 0, (tmp_path / "alerts.log").read_text()[-3000:]
        states.wait(lambda: states.last("available") == cfg["payload_not_available"])
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        ha.close()
        states.close()


def test_a_killed_forwarder_goes_offline_and_discovery_can_be_turned_off(r, redis_url, mqtt_url, prefix,
                                                                          tmp_path):
    ha_prefix, node = f"{prefix}-ha", slug(prefix)
    r.hset(keys.CAMERAS_KEY, "door-1", json.dumps({"source": "rtsp://door", "mode": "live"}))
    ha, states = Subscriber(ha_prefix), Subscriber(prefix)
    log = open(tmp_path / "alerts.log", "w")
    procs = [_alerts(redis_url, mqtt_url, prefix, ha_prefix, log)]
    try:
        cfg = _config(ha, node, "door-1", "fallen")
        topic = cfg["availability_topic"].removeprefix(prefix + "/")
        states.wait(lambda: states.last(topic) == cfg["payload_available"])
        procs[0].send_signal(signal.SIGKILL)  # no clean stop: the broker publishes the last will
        procs[0].wait(timeout=30)
        states.wait(lambda: states.last(topic) == cfg["payload_not_available"])

        ha.close()  # its retained configs cleared: then discovery turned off publishes none
        ha = Subscriber(ha_prefix)
        procs.append(_alerts(redis_url, mqtt_url, prefix, ha_prefix, log,
                             ACTIONSTREAM_MQTT_DISCOVERY="false"))
        states.wait(lambda: states.last(topic) == cfg["payload_available"])
        write(r, ev())
        states.wait(lambda: states.last("cam-1/falling") == "1")
        time.sleep(0.5)
        assert ha.messages == []  # no config at all
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        log.close()
        ha.close()
        states.close()
