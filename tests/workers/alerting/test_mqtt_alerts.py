"""MQTT alerts against the local Mosquitto (127.0.0.1:1883): events written to the events
stream of a real Redis come out as new / update / end on ``P/events`` and retained counts on
``P/<camera>/<label>``, from the forwarder in-process (clock injected) and as a process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from shared import codec, keys
from shared.schemas import Event
from shared.settings import Settings
from tests.conftest import ROOT
from workers.alerting import service as alerts
from workers.alerting.mqtt import MqttPublisher, MqttSink, MqttUnavailable
from workers.alerting.routing import AlertRules, parse_config

BROKER = ("127.0.0.1", 1883)


@pytest.fixture(scope="module")
def broker():
    try:
        socket.create_connection(BROKER, timeout=2).close()
    except OSError as exc:
        pytest.skip(f"no MQTT broker on {BROKER[0]}:{BROKER[1]} ({exc}); install and start mosquitto")
    return f"mqtt://{BROKER[0]}:{BROKER[1]}"


class Subscriber:
    """A paho client subscribed to ``prefix/#``, keeping (topic, payload, retain) in order."""

    def __init__(self, prefix: str):
        self.prefix, self.messages, self.lock = prefix, [], threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(*BROKER)
        self.client.loop_start()
        assert self.ready.wait(10), "the subscription was not acknowledged"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            topic = msg.topic.removeprefix(self.prefix + "/")
            self.messages.append((topic, msg.payload.decode(), msg.retain))

    def events(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t == "events"]

    def last(self, topic: str):
        with self.lock:
            got = [p for t, p, _ in self.messages if t == topic]
        return got[-1] if got else None

    def wait(self, what, timeout: float = 30.0):
        end = time.monotonic() + timeout  # a hang guard, not a speed assertion
        while not what():
            assert time.monotonic() < end, self.messages
            time.sleep(0.02)

    def close(self, clear_retained: bool = True):
        if clear_retained:  # leave nothing retained on the shared broker
            with self.lock:
                topics = {t for t, p, _ in self.messages if t != "events"}
            for t in topics:
                self.client.publish(f"{self.prefix}/{t}", b"", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def prefix():
    return f"actionstream-test-{uuid.uuid4().hex[:10]}"


def ev(label="falling", score=0.9, track=1, frame_end=47) -> Event:
    return Event(camera="cam-1", track_id=track, label=label, label_index=1, score=score, frame_start=0,
                 frame_end=frame_end, ts_start=0.0, ts_end=1.6, model="fall", emitted_at=time.time())


def write(r, *events) -> None:
    for e in events:
        r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(e)})


def mqtt_rules(broker: str, prefix: str, **rule) -> AlertRules:
    return AlertRules(parse_config({
        "targets": {"home": {"mqtt": broker, "topic_prefix": prefix, "end_after_s": 30}},
        "rules": [{"targets": ["home"], **rule}]}))


def test_events_become_new_update_end(r, redis_url, broker, prefix):
    sub = Subscriber(prefix)
    clock = [1_000_000.0]
    rules = mqtt_rules(broker, prefix, min_score=0.5)
    sinks = alerts.mqtt_sinks(rules, "alerts-test")
    fwd = alerts.AlertForwarder(r, alerts.make_app(Settings(redis_url=redis_url)), block_ms=50,
                                rules=rules, sinks=sinks, clock=lambda: clock[0])
    try:
        falling, fallen, other = ev(), ev("fallen", 0.8, frame_end=347), ev(track=2, frame_end=60)
        write(r, falling, fallen, other, ev(score=0.3, track=3))  # the last: below min_score
        fwd.run(burst=True)
        sub.wait(lambda: len(sub.events()) >= 3)
        got = sub.events()
        assert [(m["type"], m["after"]["track_id"], m["after"]["label"]) for m in got] == [
            ("new", 1, "falling"), ("update", 1, "fallen"), ("new", 2, "falling")]
        assert got[1]["before"]["label"] == "falling" and got[1]["after"]["event"]["id"] == fallen.id
        assert got[0]["after"]["id"] == got[1]["after"]["id"] == falling.id
        sub.wait(lambda: sub.last("cam-1/fallen") == "1" and sub.last("cam-1/falling") == "1")
        assert fwd.metrics["filtered"] == 1 and sub.last("available") == "online"

        clock[0] += 29  # not yet quiet for end_after_s: nothing ends
        fwd.run(burst=True)
        clock[0] += 1
        fwd.run(burst=True)
        sub.wait(lambda: len(sub.events()) >= 5)
        ends = sub.events()[3:]
        assert sorted((m["type"], m["after"]["track_id"]) for m in ends) == [("end", 1), ("end", 2)]
        assert all(m["after"]["end_time"] == clock[0] for m in ends)
        sub.wait(lambda: sub.last("cam-1/fallen") == "0" and sub.last("cam-1/falling") == "0")
        assert r.xpending(keys.EVENTS_STREAM, alerts.ALERTS_GROUP)["pending"] == 0
        late = Subscriber(prefix)  # the counts are retained: a new subscriber gets them at once
        late.wait(lambda: late.last("cam-1/falling") == "0")
        assert all(retain for t, _, retain in late.messages)
        late.close(clear_retained=False)
    finally:
        for sink in sinks.values():
            sink.publisher.close()
        sub.close()


def test_an_unreachable_broker_leaves_the_event_pending(r, redis_url):
    rules = mqtt_rules("mqtt://127.0.0.1:9", "actionstream-down", cooldown_s=600)
    pub = MqttPublisher("mqtt://127.0.0.1:9", "actionstream-down")
    fwd = alerts.AlertForwarder(r, alerts.make_app(Settings(redis_url=redis_url)), block_ms=50,
                                rules=rules, sinks={"home": MqttSink(pub)}, clock=lambda: 5.0)
    try:
        write(r, ev())
        from shared.redisio import ensure_group

        ensure_group(r, keys.EVENTS_STREAM, alerts.ALERTS_GROUP)
        with pytest.raises(MqttUnavailable):
            fwd.tick()
        assert r.xpending(keys.EVENTS_STREAM, alerts.ALERTS_GROUP)["pending"] == 1
        assert rules.state() == {}  # the cooldown did not start: the retry matches again
        assert fwd.sinks["home"].incidents.open == {}
    finally:
        pub.close()


@pytest.mark.integration
def test_the_alerts_process_publishes_to_mqtt(r, redis_url, broker, prefix, tmp_path):
    sub = Subscriber(prefix)
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_MQTT_TOPIC_PREFIX=prefix,
               ACTIONSTREAM_MQTT_END_AFTER_S="1", ACTIONSTREAM_LOG_LEVEL="INFO",
               ACTIONSTREAM_MQTT_DISCOVERY="false")  # tests/workers/alerting/test_mqtt_discovery.py
    log = tmp_path / "alerts.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "workers", "alerts", "--mqtt", broker],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        sub.wait(lambda: sub.last("available") == "online")
        write(r, ev(), ev("fallen", frame_end=347))
        sub.wait(lambda: [m["type"] for m in sub.events()] == ["new", "update", "end"], timeout=60)
        assert {m["after"]["id"] for m in sub.events()} == {ev().id}
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
        sub.wait(lambda: sub.last("available") == "offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
