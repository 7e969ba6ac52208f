"""MQTT publishing (paho-mqtt, QoS 1) in the topics Frigate and Home Assistant users know.

With ``topic_prefix`` P (default ``actionstream``):

* ``P/events``: one JSON message per incident change, ``{"type": "new"|"update"|"end",
  "before": {...}, "after": {...}}`` (:mod:`workers.alerting.incidents`), not retained.
* ``P/<camera>/<label>``: the number of open incidents of that camera whose latest label is
  ``<label>``, retained (a Home Assistant sensor shows it after a restart), published at
  each change that touches it (so back to ``0`` at the ``end``).
* ``P/available``: ``online`` while the forwarder is connected, ``offline`` as its last will
  (retained), as Frigate's ``frigate/available``.
* Home Assistant discovery configs (:mod:`workers.alerting.discovery`): a binary sensor per
  camera and alert label on ``P/<camera>/<label>``, unless turned off.

Messages are published from the forwarder itself, not through Celery: the order of one
incident's messages (new before update before end) matters, a Celery retry would reorder
them, and paho already keeps one connection with QoS 1 acknowledgements. The forwarder
acks an event on the events stream only after the broker acknowledged its messages; when
the broker is away :class:`MqttUnavailable` leaves the event pending for a later try.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Callable, Optional
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from shared.errors import ActionstreamError
from shared.redisio import redact
from shared.schemas import Event
from workers.alerting.discovery import Discovery
from workers.alerting.incidents import Change, Incidents, IncidentStore

log = logging.getLogger(__name__)

QOS = 1


class MqttUnavailable(ActionstreamError, ConnectionError):
    """The broker is not connected, or did not acknowledge a message in time."""


class MqttPublisher:
    """One paho client (its network thread started), reconnecting on its own."""

    def __init__(self, url: str, topic_prefix: str = "actionstream", client_id: str = "",
                 timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.url, self.prefix, self.timeout = redact(url), topic_prefix, timeout
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if parts.username:
            self.client.username_pw_set(unquote(parts.username),
                                        unquote(parts.password) if parts.password else None)
        if parts.scheme == "mqtts":
            self.client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self.client.will_set(self.topic("available"), "offline", qos=QOS, retain=True)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.client.connect_async(parts.hostname, port, keepalive=30)
        self.client.loop_start()

    def topic(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt %s refused the connection: %s", self.url, reason_code)
            return
        log.info("mqtt %s: connected", self.url)
        self.connected.set()
        client.publish(self.topic("available"), "online", qos=QOS, retain=True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        log.warning("mqtt %s: disconnected (%s); reconnecting", self.url, reason_code)

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement."""
        if not self.connected.is_set():
            raise MqttUnavailable(f"mqtt {self.url}: not connected")
        info = self.client.publish(topic, payload, qos=QOS, retain=retain)
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as exc:
            raise MqttUnavailable(f"mqtt {self.url}: {exc}") from exc
        if not info.is_published():
            raise MqttUnavailable(f"mqtt {self.url}: no acknowledgement within {self.timeout} s")

    def close(self) -> None:
        if self.connected.is_set():
            self.client.publish(self.topic("available"), "offline", qos=QOS, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()


class MqttSink:
    """One MQTT target: its incidents and its publisher. A change is recorded only after
    its messages were acknowledged, so a failed publish is redone in full on the next try."""

    def __init__(self, publisher: MqttPublisher, end_after_s: float = 30.0,
                 clock: Callable[[], float] = time.time, discovery: Optional[Discovery] = None,
                 store: Optional[IncidentStore] = None) -> None:
        """``discovery``: Home Assistant discovery for the cameras seen (None: none); ``store``:
        where the open incidents are kept (:class:`RedisIncidentStore`: they outlive a restart)."""
        self.publisher, self.clock, self.discovery = publisher, clock, discovery
        self.incidents = Incidents(end_after_s, store)
        self.published = 0

    def handle(self, event: Event, now: Optional[float] = None) -> int:
        """Publish the change ``event`` makes; messages published."""
        if self.discovery is not None:  # a camera seen first here: its sensors before its states
            self.discovery.announce(event.camera)
        change = self.incidents.on_event(event, self.clock() if now is None else now)
        return self._publish(change) if change is not None else 0

    def expire(self, now: Optional[float] = None) -> int:
        """Publish the ``end`` of every incident quiet for ``end_after_s``; messages published."""
        now = self.clock() if now is None else now
        return sum(self._publish(change) for change in self.incidents.due(now))

    def _publish(self, change: Change) -> int:
        """The change's message and the retained counts it touches, then the change is recorded
        (in the store too): a failure (:class:`MqttUnavailable`) records nothing, so the change is
        published again in full on the next try and no retained count is left stale."""
        pub, after = self.publisher, change.after
        counts = self.incidents.counts_after(change)
        pub.publish(pub.topic("events"), change.payload())
        for label, n in counts.items():
            pub.publish(pub.topic(after.camera, label), str(n), retain=True)
        self.incidents.apply(change)
        log.info("camera %s track %d: incident %s %s (%s) published to %s", after.camera,
                 after.track_id, after.id, change.type, after.label, pub.url)
        self.published += 1
        return 1
