"""Home Assistant MQTT discovery: Home Assistant finds each camera's alert states by itself.

For each camera and alert label (``falling``, ``fallen``) the forwarder publishes, retained,
``<discovery prefix>/binary_sensor/<node>/<camera>_<label>/config`` (prefix ``homeassistant``
by default; ``<node>``: the topic prefix, e.g. ``actionstream``), a binary sensor whose
``state_topic`` is the retained count topic ``<topic prefix>/<camera>/<label>`` the forwarder
publishes anyway: its ``value_template`` turns the count into ``ON`` (1 or more open
incidents) or ``OFF`` (``0``), the ``payload_on`` / ``payload_off``. Its availability is
``<topic prefix>/available`` (``online``; ``offline`` at a clean stop and as the last will).
One device per camera groups its sensors.

Cameras are announced when the forwarder starts (every camera registered in Redis), when a
camera registers later (looked for every ``RESCAN_S``) and before the first state of a
camera seen first in an event. Replay cameras (``<camera>~<job>``) are not announced: their
events never reach the live events stream.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Iterable, Sequence

from shared import keys

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "homeassistant"
PAYLOAD_ON, PAYLOAD_OFF = "ON", "OFF"
# the state topic holds a count of open incidents: any number above 0 is ON
VALUE_TEMPLATE = "{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}"
RESCAN_S = 10.0  # newly registered cameras are looked for this often


def slug(text: str) -> str:
    """``text`` as a discovery topic id (letters, digits, ``_`` and ``-`` only)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


class Discovery:
    """The discovery configs of one MQTT target (its :class:`MqttPublisher`), published once
    per camera and run (retained: Home Assistant reads them whenever it starts)."""

    def __init__(self, publisher, prefix: str = DEFAULT_PREFIX,
                 labels: Sequence[str] = ("falling", "fallen")) -> None:
        self.publisher, self.prefix, self.labels = publisher, prefix.strip("/"), tuple(labels)
        self.node = slug(publisher.prefix)
        self.announced: set[str] = set()

    def topic(self, camera: str, label: str) -> str:
        return f"{self.prefix}/binary_sensor/{self.node}/{slug(camera)}_{slug(label)}/config"

    def config(self, camera: str, label: str) -> dict:
        """The binary sensor of ``camera``'s ``label`` as Home Assistant's MQTT discovery reads it."""
        pub = self.publisher
        return {
            "name": label.capitalize(), "unique_id": f"{self.node}_{slug(camera)}_{slug(label)}",
            "object_id": f"{self.node}_{slug(camera)}_{slug(label)}",
            "state_topic": pub.topic(camera, label), "value_template": VALUE_TEMPLATE,
            "payload_on": PAYLOAD_ON, "payload_off": PAYLOAD_OFF, "device_class": "safety",
            "availability_topic": pub.topic("available"), "payload_available": "online",
            "payload_not_available": "offline", "qos": 1,
            "device": {"identifiers": [f"{self.node}_{slug(camera)}"], "name": f"{camera} ({self.node})",
                       "manufacturer": "actionstream", "model": "fall detection camera"},
            "origin": {"name": "actionstream"},
        }

    def announce(self, camera: str) -> int:
        """Publish ``camera``'s configs unless done already (MqttUnavailable when the broker
        is away: tried again on the next call); configs published."""
        if camera in self.announced or keys.is_replay(camera):
            return 0
        for label in self.labels:
            self.publisher.publish(self.topic(camera, label), json.dumps(self.config(camera, label)),
                                   retain=True)
        self.announced.add(camera)
        log.info("mqtt %s: camera %s announced to Home Assistant (%s/binary_sensor/%s/...)",
                 self.publisher.url, camera, self.prefix, self.node)
        return len(self.labels)

    def announce_all(self, cameras: Iterable[str]) -> int:
        return sum(self.announce(camera) for camera in cameras)
