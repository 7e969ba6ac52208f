"""Alert delivery: events -> Celery tasks -> webhooks (HTTP POST of the event JSON).

Two pieces, both run as their own processes:

* ``actionstream alerts --webhook URL [--webhook URL ...]`` follows the events stream in the
  consumer group ``alerts``, enqueues one :func:`deliver_webhook` task per (event, URL) and
  acks only after the tasks are enqueued. An undecodable event goes to the dead-letter
  stream with its reason.
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
import socket
import ssl
import urllib.error
import urllib.request
from typing import Optional, Sequence

import redis
from celery import Celery

from shared import codec, keys
from shared.ops import DEFAULT_URL
from shared.redisio import add_dead_letter, connect, ensure_group, redact, stream_entries
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


def forward_events(r: redis.Redis, celery: Celery, webhooks: Sequence[str],
                   consumer: str = "alerts-1", burst: bool = False, block_ms: int = 1000,
                   deadletter_maxlen: int = DEADLETTER_MAXLEN) -> int:
    """Follow the events stream in group ``alerts``: one task per (event, webhook), ack
    after enqueueing. Returns the number of tasks enqueued (``burst``: stop when idle)."""
    ensure_group(r, keys.EVENTS_STREAM, ALERTS_GROUP)
    sent, backlog = 0, True
    while True:
        resp = r.xreadgroup(ALERTS_GROUP, consumer, {keys.EVENTS_STREAM: "0" if backlog else ">"},
                            count=100, block=None if backlog else block_ms)
        entries = stream_entries(resp)
        for _, entry_id, fields in entries:
            sent += _forward_one(r, celery, webhooks, entry_id, fields, deadletter_maxlen)
        if backlog and not entries:
            backlog = False  # own pending entries first (a restart), then new ones
        elif not entries and burst:
            return sent


def _forward_one(r: redis.Redis, celery: Celery, webhooks: Sequence[str], entry_id,
                 fields: dict, deadletter_maxlen: int) -> int:
    try:
        event = codec.decode_event(fields.get(b"event", b""))
    except codec.DecodeError as exc:
        pipe = r.pipeline()
        add_dead_letter(pipe, ALERTS_GROUP, keys.EVENTS_STREAM, entry_id, fields,
                        f"undecodable event: {exc}", deadletter_maxlen)
        pipe.xack(keys.EVENTS_STREAM, ALERTS_GROUP, entry_id)
        pipe.execute()
        log.warning("event entry %s: dead-lettered: %s", entry_id, exc)
        return 0
    payload = codec.event_to_dict(event)
    for i, url in enumerate(webhooks):
        celery.send_task(DELIVER_TASK, args=[payload, url], queue=QUEUE,
                         task_id=f"{event.id}-{i}")
    r.xack(keys.EVENTS_STREAM, ALERTS_GROUP, entry_id)
    log.info("camera %s track %d: event %s queued for %d webhook(s)", event.camera,
             event.track_id, event.id, len(webhooks))
    return len(webhooks)


def run_alerts(settings: Settings, webhooks: Sequence[str], consumer: str,
               burst: bool = False) -> int:
    """``actionstream alerts``: :func:`forward_events` until stopped (or idle, ``burst``)."""
    for url in webhooks:
        if not url.startswith(("http://", "https://")):
            raise AlertsError(f"--webhook {redact(url)}: not an http(s) URL")
    url = settings.redis_url or DEFAULT_URL
    log.info("alerts: forwarding events from %s to %d webhook(s)", redact(url), len(webhooks))
    sent = forward_events(connect(url), make_app(settings), webhooks, consumer, burst=burst,
                          deadletter_maxlen=settings.deadletter_maxlen)
    log.info("alerts: %d delivery task(s) queued", sent)
    return 0


def run_alerts_worker(settings: Settings, concurrency: int = 2) -> int:
    """``actionstream alerts-worker``: a Celery worker for the delivery tasks."""
    argv = ["worker", "-Q", QUEUE, "--concurrency", str(concurrency), "--without-gossip",
            "--without-mingle", "--loglevel", logging.getLevelName(log.getEffectiveLevel())]
    make_app(settings).worker_main(argv)
    return 0


app = make_app()  # `celery -A workers.alerts worker` finds it here
