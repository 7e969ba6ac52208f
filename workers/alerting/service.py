"""Alert delivery: events -> rules -> Celery tasks -> signed webhooks, and MQTT.

Two pieces, both run as their own processes:

* ``actionstream alerts [--webhook URL ...] [--mqtt URL ...] [--alerts-config FILE]``
  follows the events stream in the consumer group ``alerts``, passes each event through
  the alert rules (:mod:`workers.alerting.routing`), publishes it to the MQTT targets it goes
  to (:mod:`workers.alerting.mqtt`, directly: see there why), enqueues one
  :func:`deliver_webhook` task per (event, webhook target) and acks only after that. An
  undecodable event goes to the dead-letter stream with its reason. Its consumer name is
  stable (``alerts_consumer``, not the host name), so a restarted forwarder finds its own
  pending events; events pending at another consumer for ``alerts_claim_idle_s`` (a
  crashed pod) are claimed.
* ``actionstream alerts-worker`` (or ``celery -A workers.alerting.service worker -Q actionstream``)
  runs the tasks: POST with the event id in an ``Idempotency-Key`` header and the Standard
  Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` when a
  ``whsec_`` secret is set: the target's ``secret`` in the alerts config, else
  ``ACTIONSTREAM_WEBHOOK_SECRET``; the worker reads the secrets itself, so they never travel
  in task messages). One attempt per task (:mod:`workers.alerting.delivery`): only a 2xx is a
  delivery (no redirect is followed); a 3xx, 5xx, 429, timeout or refused connection is retried
  on the ``webhook_retry_schedule_s`` schedule (hours; ``Retry-After`` honoured), kept in
  Redis, then dead-lettered; another 4xx or a malformed event is dead-lettered at once; an
  endpoint answering 410 or failing for ``webhook_disable_after_s`` is disabled.

Celery is JSON only (``accept_content = ["json"]``): a pickled message is refused by the
worker, never deserialised. The broker is the pipeline's Redis (``ACTIONSTREAM_REDIS_URL``;
``rediss://`` for TLS).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable, Mapping, Optional, Sequence

import redis
from celery import Celery, signals

from shared import codec, keys, metrics
from shared.errors import UserError
from shared.follower import StreamFollower
from shared.redisio import connect, redact, registered_cameras
from shared.settings import Settings, SettingsError, load_settings
from workers.alerting import webhooks as signing
from workers.alerting.delivery import (TIMEOUT_S, Delivery, PermanentError, Retries,  # noqa: F401
                                       RetryReleaser, TransientError, deliver_webhook)
from workers.alerting.discovery import RESCAN_S, Discovery
from workers.alerting.incidents import RedisIncidentStore
from workers.alerting.mqtt import MqttPublisher, MqttSink, MqttUnavailable
from workers.alerting.routing import AlertRules, AlertsConfig, check_mqtt_url, load_config, parse_config
from shared.celeryconf import ALERTS_QUEUE, celery_config

log = logging.getLogger(__name__)

ALERTS_GROUP = "alerts"
QUEUE = ALERTS_QUEUE
DELIVER_TASK = "actionstream.deliver_webhook"
DEADLETTER_MAXLEN = Settings.model_fields["deadletter_maxlen"].default


class AlertsError(UserError, ValueError):
    """Bad alerts options (a webhook that is not an http(s) URL)."""


def webhook_secrets(settings: Settings) -> dict[Optional[str], Optional[str]]:
    """Target name -> its ``whsec_`` secret (None: the default, ACTIONSTREAM_WEBHOOK_SECRET)."""
    default = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    try:
        signing.check_secret(default)
    except ValueError as exc:
        raise SettingsError(f"ACTIONSTREAM_WEBHOOK_SECRET: {exc}") from None
    out: dict[Optional[str], Optional[str]] = {None: default}
    if settings.alerts_config is not None:
        for name, target in load_config(settings.alerts_config).targets.items():
            out[name] = target.secret or default
    return out


def make_app(settings: Optional[Settings] = None) -> Celery:
    """The Celery app with :func:`deliver_webhook` registered, signing with the secrets of
    ``settings`` (task messages name the target, never carry its secret: Flower shows them)."""
    settings = settings or load_settings()
    celery = Celery("actionstream")
    celery.conf.update(celery_config(settings))
    _count_task_outcomes()
    secrets = webhook_secrets(settings)
    delivery: list[Delivery] = []  # made on the first task (a Redis connection), then shared

    def deliver(event: dict, url: str, target: Optional[str] = None, attempt: int = 0) -> int:
        if not delivery:
            delivery.append(Delivery(connect(settings), settings, secrets))
        return delivery[0].attempt(event, url, target, attempt)

    celery.task(name=DELIVER_TASK)(deliver)  # no Celery retries: Delivery keeps its own schedule
    _release_retries_in_worker(celery, settings)
    return celery


def _release_retries_in_worker(celery: Celery, settings: Settings) -> None:
    """In a delivery worker (not in the forwarder, which only queues): a thread queues the
    webhook retries that are due, and the disabled endpoints are reported at start."""
    from workers.alerting.delivery import Endpoints

    def start(sender=None, **_) -> None:
        if getattr(sender, "app", celery) is not celery:  # another app's worker in this process
            return
        r = connect(settings)
        Endpoints(r).report()

        def send(job: dict) -> None:
            celery.send_task(DELIVER_TASK, args=[job["event"], job["url"]],
                             kwargs={"target": job["target"], "attempt": job["attempt"]}, queue=QUEUE,
                             task_id=f"{job['event'].get('id')}-{job['target']}-r{job['attempt']}")
        releaser = RetryReleaser(Retries(r), send)
        releaser.start()
        signals.worker_shutdown.connect(lambda **_: releaser.stopping.set(), weak=False)

    signals.worker_ready.connect(start, weak=False)


def _task_outcome(outcome: str):
    def count(sender=None, **_) -> None:
        name = getattr(sender, "name", None) or str(sender)
        if name.startswith("actionstream."):
            metrics.CELERY_TASKS.labels(name, outcome).inc()
    return count


_OUTCOME_SIGNALS = (("success", signals.task_success), ("retry", signals.task_retry),
                    ("failure", signals.task_failure))
_outcome_handlers = [(sig, _task_outcome(outcome)) for outcome, sig in _OUTCOME_SIGNALS]


def _count_task_outcomes() -> None:
    """Count each actionstream task's outcome in the metrics (signals fire in the process
    that ran the task: the worker runs a thread pool, so that is the one serving /metrics)."""
    for sig, handler in _outcome_handlers:
        sig.connect(handler, weak=False, dispatch_uid=f"actionstream-metrics-{sig.name}")


class AlertForwarder(StreamFollower):
    """Follows the events stream in group ``alerts`` (:class:`StreamFollower`: a stable
    consumer name, claim of a crashed pod's pending events, reconnect with backoff): MQTT
    messages, then one task per (event, webhook), acked after enqueueing. While the broker
    is away the event stays pending (:class:`MqttUnavailable` is retried)."""

    group = ALERTS_GROUP
    retry_errors = (MqttUnavailable,)

    def __init__(self, r: redis.Redis, celery: Celery, webhooks: Sequence[str] = (),
                 consumer: str = "alerts-1", block_ms: int = 1000,
                 deadletter_maxlen: int = DEADLETTER_MAXLEN, claim_idle_ms: int = 30_000, *,
                 rules: Optional[AlertRules] = None, sinks: Optional[Mapping[str, MqttSink]] = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``rules`` (default: every event to each of ``webhooks``) route events to targets;
        ``sinks``: an :class:`MqttSink` for each MQTT target of the rules; ``clock``: wall
        time for the rules' quiet hours and the incidents."""
        super().__init__(r, keys.EVENTS_STREAM, consumer, block_ms, deadletter_maxlen, claim_idle_ms)
        self.celery, self.clock = celery, clock
        self.rules = rules or AlertRules(AlertsConfig.simple(webhooks))
        targets = self.rules.config.targets
        self.webhooks = {name: t.webhook for name, t in targets.items() if t.webhook}
        self.sinks = dict(sinks or {})
        missing = sorted(name for name, t in targets.items() if t.mqtt and name not in self.sinks)
        if missing:
            raise AlertsError(f"MQTT target(s) {missing} have no publisher")
        self.metrics.update(sent=0, events=0, mqtt=0, filtered=0)
        self._next_scan = 0.0

    def before_read(self, now: float) -> None:
        """Home Assistant discovery for the cameras registered (at start, then every RESCAN_S)."""
        discoveries = [s.discovery for s in self.sinks.values() if s.discovery is not None]
        if discoveries and now >= self._next_scan:
            cameras = registered_cameras(self.r)
            for discovery in discoveries:
                self.metrics["mqtt"] += discovery.announce_all(cameras)
            self._next_scan = now + RESCAN_S

    def unreachable(self, exc: BaseException) -> str:
        return "mqtt" if isinstance(exc, MqttUnavailable) else "redis"

    def result(self) -> int:
        return self.metrics["sent"]

    def handle(self, entry_id, fields: dict) -> None:
        self.forward_one(entry_id, fields)

    def after_read(self) -> None:
        for sink in self.sinks.values():  # incidents quiet for end_after_s: their `end`
            self.metrics["mqtt"] += sink.expire(self.clock())

    def forward_one(self, entry_id, fields: dict) -> int:
        try:
            event = codec.decode_event(fields.get(b"event", b""))
        except codec.DecodeError as exc:
            self.dead_letter(entry_id, fields, f"undecodable event: {exc}")
            return 0
        now = self.clock()
        saved = self.rules.state()
        targets = self.rules.match(event, now)
        try:  # MQTT first: when the broker is away nothing is queued and the event stays pending
            for name in targets:
                if name in self.sinks:
                    self.metrics["mqtt"] += self.sinks[name].handle(event, now)
        except MqttUnavailable:
            self.rules.restore(saved)  # the retry must match as this try did
            raise
        payload = codec.event_to_dict(event)
        hooks = [name for name in targets if name in self.webhooks]
        for name in hooks:
            self.celery.send_task(DELIVER_TASK, args=[payload, self.webhooks[name]],
                                  kwargs={"target": name}, queue=QUEUE, task_id=f"{event.id}-{name}")
        self.r.xack(keys.EVENTS_STREAM, ALERTS_GROUP, entry_id)
        self.metrics["events"] += 1
        self.metrics["filtered"] += not targets
        self.metrics["sent"] += len(hooks)
        metrics.ALERT_TASKS.inc(len(hooks))
        log.info("camera %s track %d: event %s (%s %.2f) to target(s) %s", event.camera,
                 event.track_id, event.id, event.label, event.score, targets or "none (rules)")
        return len(hooks)


def forward_events(r: redis.Redis, celery: Celery, webhooks: Sequence[str],
                   consumer: str = "alerts-1", burst: bool = False, block_ms: int = 1000,
                   deadletter_maxlen: int = DEADLETTER_MAXLEN, claim_idle_ms: int = 30_000) -> int:
    """:class:`AlertForwarder` until stopped (``burst``: until idle); tasks enqueued."""
    return AlertForwarder(r, celery, webhooks, consumer, block_ms, deadletter_maxlen,
                          claim_idle_ms).run(burst=burst)


def alert_rules(settings: Settings, webhooks: Sequence[str] = (), mqtt: Sequence[str] = ()) -> AlertRules:
    """The rules of ``settings.alerts_config`` plus a rule sending every event to each
    ``webhooks`` / ``mqtt`` URL (and ACTIONSTREAM_MQTT_URL); AlertsError when there is no target."""
    for url in webhooks:
        if not url.startswith(("http://", "https://")):
            raise AlertsError(f"--webhook {redact(url)}: not an http(s) URL")
    mqtt = list(mqtt) or ([settings.mqtt_url] if settings.mqtt_url else [])
    for url in mqtt:
        try:
            check_mqtt_url(url)
        except ValueError as exc:
            raise AlertsError(f"--mqtt (or ACTIONSTREAM_MQTT_URL) {redact(url)}: {exc}") from None
    raw: dict = {"targets": {}, "rules": []}
    if settings.alerts_config is not None:
        raw = load_config(settings.alerts_config).model_dump()
    if webhooks or mqtt:
        cli = AlertsConfig.simple(webhooks, mqtt, settings.mqtt_topic_prefix, settings.mqtt_end_after_s)
        raw["targets"].update({f"cli-{name}": t.model_dump() for name, t in cli.targets.items()})
        raw["rules"].append({"name": "command line", "targets": [f"cli-{n}" for n in cli.targets]})
    if not raw["targets"]:
        raise AlertsError("no alert target: give --webhook URL, --mqtt URL or --alerts-config FILE")
    return AlertRules(parse_config(raw, "alert targets"))


def mqtt_sinks(rules: AlertRules, consumer: str, timeout: float = 10.0,
               settings: Optional[Settings] = None, r: Optional[redis.Redis] = None) -> dict[str, MqttSink]:
    """A connected (or connecting) :class:`MqttSink` per MQTT target of ``rules``, each with
    Home Assistant discovery of the ``settings`` alert labels unless ``mqtt_discovery`` is off
    (no ``settings``: none), and its open incidents kept in ``r`` (None: in memory only; a
    restart would forget them, never publishing their ``end``)."""
    sinks = {}
    for name, target in rules.config.targets.items():
        if target.mqtt:
            pub = MqttPublisher(target.mqtt, target.topic_prefix, f"actionstream-{consumer}-{name}")
            if not pub.wait_connected(timeout):
                log.warning("alerts %s: mqtt %s not reachable yet; events wait until it is", consumer,
                            pub.url)
            discovery = (Discovery(pub, settings.mqtt_discovery_prefix, settings.alert_labels)
                         if settings is not None and settings.mqtt_discovery else None)
            store = RedisIncidentStore(r, keys.mqtt_incidents_key(name)) if r is not None else None
            sinks[name] = MqttSink(pub, target.end_after_s, discovery=discovery, store=store)
    return sinks


def run_alerts(settings: Settings, webhooks: Sequence[str] = (), consumer: Optional[str] = None,
               burst: bool = False, mqtt: Sequence[str] = ()) -> int:
    """``actionstream alerts``: forward events until stopped (or idle, ``burst``).
    ``consumer``: the group consumer name, by default the stable ``alerts_consumer``."""
    rules = alert_rules(settings, webhooks, mqtt)
    url = settings.redis_target
    consumer = consumer or settings.alerts_consumer
    metrics.serve(settings.metrics_port, settings.metrics_host)
    log.info("alerts %s: forwarding events from %s to target(s) %s by %d rule(s)", consumer,
             redact(url), sorted(rules.config.targets), len(rules.config.rules))
    r = connect(url)
    sinks = mqtt_sinks(rules, consumer, settings=settings, r=r)
    try:
        forwarder = AlertForwarder(r, make_app(settings), (), consumer,
                                   deadletter_maxlen=settings.deadletter_maxlen,
                                   claim_idle_ms=int(settings.alerts_claim_idle_s * 1000),
                                   rules=rules, sinks=sinks)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, forwarder.request_stop)
        sent = forwarder.run(burst=burst)
    finally:
        for sink in sinks.values():
            sink.publisher.close()
    log.info("alerts %s: %d delivery task(s) queued, %d MQTT message(s)", consumer, sent,
             forwarder.metrics["mqtt"])
    return 0


def run_alerts_worker(settings: Settings, concurrency: int = 2) -> int:
    """``actionstream alerts-worker``: a Celery worker for the delivery tasks."""
    metrics.serve(settings.metrics_port, settings.metrics_host)
    # a thread pool: delivery waits on the network, and task outcomes are counted in this process
    argv = ["worker", "-Q", QUEUE, "--pool", "threads", "--concurrency", str(concurrency),
            "--without-gossip", "--without-mingle", "--loglevel",
            logging.getLevelName(log.getEffectiveLevel())]
    make_app(settings).worker_main(argv)
    return 0


def __getattr__(name: str):
    """``app``, made on first use (``celery -A workers.alerting.service worker`` finds it here), so that
    importing this module reads no settings."""
    if name == "app":
        globals()["app"] = make_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
