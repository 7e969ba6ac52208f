"""Alert rules: which events go to which targets. The config (an ``--alerts-config`` YAML
file) is validated with pydantic; :meth:`AlertRules.match` is pure, the clock passed in.

A rule passes an event when its label is one of ``labels`` (empty: any), its score is at
least ``min_score``, its camera is one of ``cameras`` (empty: any), ``now`` (in the
config's ``timezone``) is outside every ``quiet_hours`` range ("22:00-06:00" wraps
midnight), and the rule has not passed an event of the same camera within ``cooldown_s``
seconds. An event goes to the union of the targets of the rules that pass it.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from shared.keys import check_camera_id
from shared.schemas import Event
from shared.settings import SettingsError, problems, read_yaml
from workers.alerting.webhooks import check_secret

QUIET = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def check_mqtt_url(url: str) -> str:
    """``mqtt://[USER:PASSWORD@]HOST[:PORT]`` (``mqtts://`` for TLS); ValueError otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # ValueError when not a number in range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError("not an MQTT URL (expected mqtt://[USER:PASSWORD@]HOST[:PORT] or mqtts://...)")
    return url


def check_topic_prefix(prefix: str) -> str:
    if not prefix or any(c in prefix for c in "#+\0") or prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"topic prefix {prefix!r} must be non-empty, without #, + or a leading "
                         "or trailing /")
    return prefix


def quiet_range(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` -> (start, end) minutes of the day; ValueError naming the format."""
    m = QUIET.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"quiet hours {text!r} must be HH:MM-HH:MM, e.g. 22:00-06:00")
    start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if start == end:
        raise ValueError(f"quiet hours {text!r} are empty (start equals end)")
    return start, end


def in_range(minute: int, span: tuple[int, int]) -> bool:
    start, end = span
    return start <= minute < end if start < end else minute >= start or minute < end


class Target(BaseModel):
    """One target: a webhook (``webhook`` URL, optional ``secret``) or an MQTT broker
    (``mqtt`` URL, ``topic_prefix``, ``end_after_s``)."""

    model_config = {"extra": "forbid"}

    webhook: Optional[str] = None
    secret: Optional[str] = None  # whsec_<base64>; None: ACTIONSTREAM_WEBHOOK_SECRET
    mqtt: Optional[str] = None
    topic_prefix: str = "actionstream"
    end_after_s: float = Field(30.0, gt=0)  # an incident ends this long after its last event

    @field_validator("webhook")
    @classmethod
    def _http(cls, url):
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("not an http(s) URL")
        return url

    @field_validator("secret")
    @classmethod
    def _secret(cls, value):
        return check_secret(value)

    @field_validator("mqtt")
    @classmethod
    def _mqtt(cls, url):
        return url if url is None else check_mqtt_url(url)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, prefix):
        return check_topic_prefix(prefix)

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.webhook is None) == (self.mqtt is None):
            raise ValueError("a target needs exactly one of webhook: URL or mqtt: URL")
        if self.secret is not None and self.webhook is None:
            raise ValueError("secret: is for webhook targets only")
        return self


class Rule(BaseModel):
    model_config = {"extra": "forbid"}

    name: Optional[str] = None
    labels: list[str] = []  # empty: every label
    min_score: float = Field(0.0, ge=0, le=1)
    cameras: list[str] = []  # empty: every camera
    quiet_hours: list[str] = []  # "HH:MM-HH:MM", local time of the config's timezone
    cooldown_s: float = Field(0.0, ge=0)  # per camera: quiet this long after passing an event
    targets: list[str] = Field(min_length=1)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, values: list[str]) -> list[str]:
        for v in values:
            quiet_range(v)
        return values

    @field_validator("cameras")
    @classmethod
    def _cameras(cls, values: list[str]) -> list[str]:
        return [check_camera_id(v) for v in values]


class AlertsConfig(BaseModel):
    model_config = {"extra": "forbid"}

    timezone: str = "UTC"
    targets: dict[str, Target] = Field(min_length=1)
    rules: list[Rule] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {name!r} (an IANA name such as Europe/Berlin)") from None
        return name

    @field_validator("rules")
    @classmethod
    def _known_targets(cls, rules: list[Rule], info: ValidationInfo) -> list[Rule]:
        if "targets" not in info.data:  # invalid themselves: that error is the one to read
            return rules
        known = info.data["targets"]
        for i, rule in enumerate(rules):
            unknown = [t for t in rule.targets if t not in known]
            if unknown:
                raise ValueError(f"rules[{i}] targets {unknown} are not defined under targets: "
                                 f"(defined: {sorted(known)})")
        return rules

    @classmethod
    def simple(cls, webhooks: Sequence[str] = (), mqtt: Sequence[str] = (),
               topic_prefix: str = "actionstream", end_after_s: float = 30.0) -> "AlertsConfig":
        """Every event to every target: what ``--webhook`` / ``--mqtt`` without a file mean."""
        targets = {f"webhook-{i + 1}": {"webhook": url} for i, url in enumerate(webhooks)}
        targets.update({f"mqtt-{i + 1}": {"mqtt": url, "topic_prefix": topic_prefix,
                                          "end_after_s": end_after_s} for i, url in enumerate(mqtt)})
        return parse_config({"targets": targets, "rules": [{"name": "all", "targets": list(targets)}]},
                            "alert targets")


def explain(exc: ValidationError, where: str) -> str:
    """Each bad field: its dotted location and the problem (one line each when several)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return problems(f"{where} is invalid", parts)


def parse_config(raw, where: str = "alerts config") -> AlertsConfig:
    """A validated config from parsed YAML; :class:`SettingsError` naming the field."""
    try:
        return AlertsConfig.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(explain(exc, where)) from None


def load_config(path: str | Path) -> AlertsConfig:
    return parse_config(read_yaml(path, "alerts config"), f"alerts config {path}")


class AlertRules:
    """The rules of a config with their cooldown state (per rule and camera)."""

    def __init__(self, config: AlertsConfig) -> None:
        self.config = config
        self.zone = ZoneInfo(config.timezone)
        self._quiet = [[quiet_range(q) for q in rule.quiet_hours] for rule in config.rules]
        self._last: dict[tuple[int, str], float] = {}  # (rule index, camera) -> now it passed

    def state(self) -> dict:
        """The cooldown state (to :meth:`restore` when what a match decided was not done)."""
        return dict(self._last)

    def restore(self, state: dict) -> None:
        self._last = dict(state)

    def match(self, event: Event, now: float) -> list[str]:
        """The target names ``event`` goes to at unix time ``now`` (config order, no repeats);
        a rule that passes it starts its cooldown for the event's camera."""
        local = datetime.fromtimestamp(now, self.zone)
        minute = local.hour * 60 + local.minute
        out: list[str] = []
        for i, rule in enumerate(self.config.rules):
            if not self._passes(i, rule, event, now, minute):
                continue
            self._last[(i, event.camera)] = now
            out.extend(t for t in rule.targets if t not in out)
        return out

    def _passes(self, i: int, rule: Rule, event: Event, now: float, minute: int) -> bool:
        if rule.labels and event.label not in rule.labels:
            return False
        if event.score < rule.min_score or (rule.cameras and event.camera not in rule.cameras):
            return False
        if any(in_range(minute, span) for span in self._quiet[i]):
            return False
        last = self._last.get((i, event.camera))
        return last is None or now - last >= rule.cooldown_s
