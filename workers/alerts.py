"""Alert delivery: events -> Celery tasks -> webhooks (HTTP POST of the event JSON).

Two pieces, both run as their own processes:

* ``actionstream alerts --webhook URL [--webhook URL ...]`` follows the events stream in the
  consumer group ``alerts``, enqueues one :func:`deliver_webhook` task per (event, URL) and
  acks only after the tasks are enqueued. An undecodable event goes to the dead-letter
  stream with its reason. Its consumer name is stable (``alerts_consumer``, not the host
  name), so a restarted forwarder finds its own pending events; events pending at another
  consumer for ``alerts_claim_idle_s`` (a crashed pod) are claimed.
* ``actionstream alerts-worker`` (or ``celery -A workers.alerts worker -Q actionstream``)
  runs the tasks: POST with the event id
  in an ``Idempotency-Key`` header; connection errors and 5xx answers are retried with
  capped exponential backoff and jitter, a 4xx answer or a malformed event is not.

Celery is JSON only (``accept_content = ["json"]``): a pickled message is refused by the
worker, never deserialised. The broker is the pipeline's Redis (``ACTIONSTREAM_REDIS_URL``;
``rediss://`` for TLS).
"""

from __future__ import annotations

import json
import logging
import random
import signal
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import Optional, Sequence

import redis
from celery import Celery

from shared import claiming, codec, keys
from shared.ops import DEFAULT_URL
from shared.reading import read_group
from shared.redisio import CONNECTION_ERRORS, add_dead_letter, connect, ensure_group, redact
from shared.settings import Settings, load_settings

log = logging.getLogger(__name__)

ALERTS_GROUP = "alerts"
QUEUE = "actionstream"
DELIVER_TASK = "actionstream.deliver_webhook"
TIMEOUT_S = 10.0
DEADLETTER_MAXLEN = Settings.model_fields["deadletter_maxlen"].default


class AlertsError(ValueError):
    """Bad alerts options (a webhook that is not an http(s) URL)."""


class PermanentError(Exception):
    """A delivery that retrying cannot fix (malformed event, 4xx answer)."""


class TransientError(Exception):
    """A delivery worth retrying (connection error, timeout, 5xx answer)."""


def celery_config(settings: Settings) -> dict:
    """Celery settings: JSON only, late acks, the pipeline's Redis as broker."""
    url = settings.redis_url or DEFAULT_URL
    config = {
        "broker_url": url, "task_default_queue": QUEUE,
        "task_serializer": "json", "result_serializer": "json", "event_serializer": "json",
        "accept_content": ["json"], "result_accept_content": ["json"],
        "task_acks_late": True, "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1, "broker_connection_retry_on_startup": True,
        "task_ignore_result": True, "worker_hijack_root_logger": False,
    }
    if url.startswith("rediss://") and "ssl_cert_reqs" not in url:
        config["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return config


def make_app(settings: Optional[Settings] = None) -> Celery:
    """The Celery app with :func:`deliver_webhook` registered."""
    celery = Celery("actionstream")
    celery.conf.update(celery_config(settings or load_settings()))
    celery.task(name=DELIVER_TASK, autoretry_for=(TransientError,), retry_backoff=2,
                retry_backoff_max=300, retry_jitter=True, max_retries=10)(deliver_webhook)
    return celery


def deliver_webhook(event: dict, url: str, timeout: float = TIMEOUT_S) -> int:
    """POST ``event`` (checked against the event schema) to ``url``; the HTTP status.
    :class:`PermanentError` or :class:`TransientError` when it fails."""
    try:
        parsed = codec.decode_event(json.dumps(event))
    except (codec.DecodeError, TypeError, ValueError) as exc:
        raise PermanentError(f"not an event: {exc}") from exc
    body = codec.encode_event(parsed).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Idempotency-Key": parsed.id,
        "User-Agent": "actionstream-alerts"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise TransientError(f"{redact(url)} answered {exc.code}") from exc
        raise PermanentError(f"{redact(url)} answered {exc.code}") from exc
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        raise TransientError(f"{redact(url)}: {exc}") from exc
    log.info("camera %s track %d: event %s delivered to %s (%d)", parsed.camera,
             parsed.track_id, parsed.id, redact(url), status)
    return status


class AlertForwarder:
    """Follows the events stream in group ``alerts``: one task per (event, webhook), acked
    after enqueueing. The loop's parts as the stages use them: a stable consumer name (a
    restart reads its own pending events first), claim of other consumers' events pending
    longer than ``claim_idle_ms`` (a crashed pod's), reconnect with capped backoff."""

    def __init__(self, r: redis.Redis, celery: Celery, webhooks: Sequence[str],
                 consumer: str = "alerts-1", block_ms: int = 1000,
                 deadletter_maxlen: int = DEADLETTER_MAXLEN, claim_idle_ms: int = 30_000) -> None:
        self.r, self.celery, self.webhooks = r, celery, list(webhooks)
        self.consumer, self.block_ms, self.claim_idle_ms = consumer, block_ms, claim_idle_ms
        self.deadletter_maxlen = deadletter_maxlen
        self.metrics = {"sent": 0, "events": 0, "dead": 0, "claimed": 0, "reconnects": 0}
        self.backlog = True  # own pending entries first (a restart), then new ones
        self._next_claim = 0.0
        self._stop = False

    def request_stop(self, *_) -> None:
        self._stop = True

    def run(self, burst: bool = False) -> int:
        """Forward until stopped (``burst``: until nothing is left); tasks enqueued."""
        backoff = 0.2
        while not self._stop:
            try:
                ensure_group(self.r, keys.EVENTS_STREAM, ALERTS_GROUP)
                got = self.tick()
                backoff = 0.2
            except CONNECTION_ERRORS as exc:
                self.metrics["reconnects"] += 1
                log.warning("alerts %s: redis unreachable (%s); retrying in %.1f s", self.consumer,
                            exc, backoff)
                time.sleep(backoff * (0.5 + random.random()))
                backoff, self.backlog = min(backoff * 2, 10.0), True
                continue
            if burst and not got and not self.backlog:
                break
        return self.metrics["sent"]

    def tick(self) -> int:
        """Claim stale events (now and then), read a batch, forward it; entries read."""
        now = time.monotonic()
        if now >= self._next_claim:
            claimed = claiming.claim(self.r, keys.EVENTS_STREAM, ALERTS_GROUP, self.consumer,
                                     min_idle_ms=self.claim_idle_ms)
            if claimed:
                log.info("alerts %s: claimed %d event(s) pending at other consumers", self.consumer,
                         claimed)
                self.metrics["claimed"] += claimed
                self.backlog = True
            self._next_claim = now + self.claim_idle_ms / 2000
        entries = []
        if self.backlog:
            entries = self._read("0", None)
            self.backlog = bool(entries)
        if not entries:
            entries = self._read(">", self.block_ms)
        for e in entries:
            self.forward_one(e.id, e.fields)
        return len(entries)

    def _read(self, start: str, block: Optional[int]):
        return read_group(self.r, ALERTS_GROUP, self.consumer, {keys.EVENTS_STREAM: start},
                          count=100, block=block)

    def forward_one(self, entry_id, fields: dict) -> int:
        try:
            event = codec.decode_event(fields.get(b"event", b""))
        except codec.DecodeError as exc:
            pipe = self.r.pipeline()
            add_dead_letter(pipe, ALERTS_GROUP, keys.EVENTS_STREAM, entry_id, fields,
                            f"undecodable event: {exc}", self.deadletter_maxlen)
            pipe.xack(keys.EVENTS_STREAM, ALERTS_GROUP, entry_id)
            pipe.execute()
            self.metrics["dead"] += 1
            log.warning("event entry %s: dead-lettered: %s", entry_id, exc)
            return 0
        payload = codec.event_to_dict(event)
        for i, url in enumerate(self.webhooks):
            self.celery.send_task(DELIVER_TASK, args=[payload, url], queue=QUEUE,
                                  task_id=f"{event.id}-{i}")
        self.r.xack(keys.EVENTS_STREAM, ALERTS_GROUP, entry_id)
        self.metrics["events"] += 1
        self.metrics["sent"] += len(self.webhooks)
        log.info("camera %s track %d: event %s queued for %d webhook(s)", event.camera,
                 event.track_id, event.id, len(self.webhooks))
        return len(self.webhooks)


def forward_events(r: redis.Redis, celery: Celery, webhooks: Sequence[str],
                   consumer: str = "alerts-1", burst: bool = False, block_ms: int = 1000,
                   deadletter_maxlen: int = DEADLETTER_MAXLEN, claim_idle_ms: int = 30_000) -> int:
    """:class:`AlertForwarder` until stopped (``burst``: until idle); tasks enqueued."""
    return AlertForwarder(r, celery, webhooks, consumer, block_ms, deadletter_maxlen,
                          claim_idle_ms).run(burst=burst)


def run_alerts(settings: Settings, webhooks: Sequence[str], consumer: Optional[str] = None,
               burst: bool = False) -> int:
    """``actionstream alerts``: forward events until stopped (or idle, ``burst``).
    ``consumer``: the group consumer name, by default the stable ``alerts_consumer``."""
    for url in webhooks:
        if not url.startswith(("http://", "https://")):
            raise AlertsError(f"--webhook {redact(url)}: not an http(s) URL")
    url = settings.redis_url or DEFAULT_URL
    consumer = consumer or settings.alerts_consumer
    log.info("alerts %s: forwarding events from %s to %d webhook(s)", consumer, redact(url),
             len(webhooks))
    forwarder = AlertForwarder(connect(url), make_app(settings), webhooks, consumer,
                               deadletter_maxlen=settings.deadletter_maxlen,
                               claim_idle_ms=int(settings.alerts_claim_idle_s * 1000))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, forwarder.request_stop)
    sent = forwarder.run(burst=burst)
    log.info("alerts %s: %d delivery task(s) queued", consumer, sent)
    return 0


def run_alerts_worker(settings: Settings, concurrency: int = 2) -> int:
    """``actionstream alerts-worker``: a Celery worker for the delivery tasks."""
    argv = ["worker", "-Q", QUEUE, "--concurrency", str(concurrency), "--without-gossip",
            "--without-mingle", "--loglevel", logging.getLevelName(log.getEffectiveLevel())]
    make_app(settings).worker_main(argv)
    return 0


def __getattr__(name: str):
    """``app``, made on first use (``celery -A workers.alerts worker`` finds it here), so that
    importing this module reads no settings."""
    if name == "app":
        globals()["app"] = make_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
