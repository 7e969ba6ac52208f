"""Webhook delivery that never lies: one attempt per Celery task, retries kept in Redis.

* :func:`deliver_webhook` POSTs one signed event (Standard Webhooks headers) and follows no
  redirect: only a 2xx answer is a delivery. A 3xx (the alert's body would go elsewhere, or
  be re-sent as a GET with none), a 5xx, a 429, a timeout or a refused connection is a
  failure worth retrying (:class:`TransientError`, with the answer's ``Retry-After``); another
  4xx, or a malformed event, is not (:class:`PermanentError`); ``410 Gone`` disables the endpoint.
* :class:`Delivery` runs one attempt: on a failure worth retrying it schedules the next one
  ``webhook_retry_schedule_s[attempt]`` seconds later (longer when the endpoint asked for it
  with ``Retry-After``, up to ``webhook_max_retry_after_s``) in the sorted set
  ``keys.WEBHOOK_RETRIES_KEY``; after the last one, or when the endpoint is disabled, the
  event goes to the dead-letter stream with its reason. Each outcome is counted
  (``actionstream_webhook_deliveries_total``): a task that did not deliver never counts as a
  success. Retries wait in Redis, not as Celery countdowns: a countdown longer than the Redis
  broker's visibility timeout is redelivered, and a worker restart would lose the schedule.
* :class:`Endpoints` keeps, per target, since when it fails (reset by any 2xx); one failing for
  ``webhook_disable_after_s`` or answering 410 is disabled (an error in the log, the gauge
  ``actionstream_webhook_endpoint_disabled``, and each further event for it dead-lettered),
  until :meth:`Endpoints.enable`.
* :func:`release_due` (a thread of the delivery worker, :class:`RetryReleaser`) queues the
  retries that are due; one is claimed for ``RETRY_LEASE_S`` before it is queued and removed
  after, so a worker dying in between queues it again later (at least once; receivers
  deduplicate by ``webhook-id``, the event id, the same at every attempt).
"""

from __future__ import annotations

import email.utils
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Optional

import redis
from celery.exceptions import Ignore

from shared import codec, keys, metrics
from shared.errors import ActionstreamError
from shared.redisio import add_dead_letter, redact
from shared.settings import Settings
from workers.alerting import webhooks as signing

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
RETRY_LEASE_S = 300.0
STAGE = "alerts"


class PermanentError(ActionstreamError):
    """A delivery that retrying cannot fix (malformed event, a 4xx answer)."""


class GoneError(PermanentError):
    """The endpoint answered 410 Gone: it is disabled."""


class TransientError(ActionstreamError):
    """A delivery worth retrying (connection error, timeout, 3xx, 429, 5xx answer);
    ``retry_after``: the seconds the endpoint asked to wait (None: not said)."""

    def __init__(self, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError(3xx): a failed delivery


_opener = urllib.request.build_opener(_NoRedirect)


def retry_after_s(value: Optional[str], now: float) -> Optional[float]:
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds from ``now``; None when absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now) if when is not None else None


def deliver_webhook(event: dict, url: str, timeout: float = TIMEOUT_S, secret: Optional[str] = None,
                    clock: Callable[[], float] = time.time) -> int:
    """POST ``event`` (checked against the event schema) to ``url``, signed with ``secret``
    (``whsec_...``) per Standard Webhooks, following no redirect; the 2xx status.
    :class:`PermanentError` or :class:`TransientError` when it was not delivered."""
    try:
        parsed = codec.decode_event(json.dumps(event))
    except (codec.DecodeError, TypeError, ValueError) as exc:
        raise PermanentError(f"not an event: {exc}") from exc
    body = codec.encode_event(parsed).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Idempotency-Key": parsed.id,
        "User-Agent": "actionstream-alerts", **signing.headers(parsed.id, int(clock()), body, secret)})
    try:
        with _opener.open(req, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        raise _http_failure(url, exc.code, exc.headers, clock()) from exc
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        raise TransientError(f"{redact(url)}: {exc}") from exc
    if not 200 <= status < 300:
        raise TransientError(f"{redact(url)} answered {status}, not 2xx")
    log.info("camera %s track %d: event %s delivered to %s (%d)", parsed.camera,
             parsed.track_id, parsed.id, redact(url), status)
    return status


def _http_failure(url: str, code: int, headers, now: float) -> Exception:
    where = f"{redact(url)} answered {code}"
    if code == 410:
        return GoneError(f"{where} (Gone)")
    if 300 <= code < 400:
        return TransientError(f"{where}, a redirect (to {redact(headers.get('Location') or '?')}); "
                              "not followed: a webhook is delivered only by a 2xx answer")
    if code >= 500 or code in (408, 425, 429):
        return TransientError(where, retry_after_s(headers.get("Retry-After"), now))
    return PermanentError(where)


class Endpoints:
    """Per webhook target (hash ``keys.WEBHOOK_ENDPOINTS_KEY``, target -> JSON): since when it
    fails without a success in between, or why and when it was disabled."""

    def __init__(self, r: redis.Redis, disable_after_s: float = 86400.0) -> None:
        self.r, self.disable_after_s = r, disable_after_s

    def state(self, name: str) -> dict:
        raw = self.r.hget(keys.WEBHOOK_ENDPOINTS_KEY, name)
        return json.loads(raw) if raw else {}

    def disabled(self, name: str) -> Optional[str]:
        return self.state(name).get("disabled")

    def succeeded(self, name: str) -> None:
        if self.state(name).get("failing_since") is not None and not self.disabled(name):
            self.r.hdel(keys.WEBHOOK_ENDPOINTS_KEY, name)

    def failed(self, name: str, now: float, why: str) -> Optional[str]:
        """Record a failure; the reason it is disabled when it has failed for ``disable_after_s``."""
        state = self.state(name)
        since = state.get("failing_since")
        if since is None:
            self.r.hset(keys.WEBHOOK_ENDPOINTS_KEY, name, json.dumps({"failing_since": now}))
            return None
        if now - since >= self.disable_after_s:
            return self.disable(name, f"failing for {now - since:.0f} s with no delivery ({why})", now)
        return None

    def disable(self, name: str, reason: str, now: float) -> str:
        self.r.hset(keys.WEBHOOK_ENDPOINTS_KEY, name, json.dumps({"disabled": reason, "disabled_at": now}))
        metrics.WEBHOOK_DISABLED.labels(name).set(1)
        log.error("webhook target %s DISABLED: %s; its events go to the dead letters until it is "
                  "enabled again (HDEL %s %s)", name, reason, keys.WEBHOOK_ENDPOINTS_KEY, name)
        return reason

    def enable(self, name: str) -> None:
        self.r.hdel(keys.WEBHOOK_ENDPOINTS_KEY, name)
        metrics.WEBHOOK_DISABLED.labels(name).set(0)

    def report(self) -> dict[str, str]:
        """The disabled targets and why (each also logged and set in the gauge)."""
        out = {}
        for name, raw in self.r.hgetall(keys.WEBHOOK_ENDPOINTS_KEY).items():
            reason = json.loads(raw).get("disabled")
            if reason:
                out[name.decode()] = reason
                metrics.WEBHOOK_DISABLED.labels(name.decode()).set(1)
                log.error("webhook target %s is disabled: %s", name.decode(), reason)
        return out


# claim the due retries: each one's score moves RETRY_LEASE_S on (queued again then, unless removed)
_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m) end
return due
"""


class Retries:
    """The scheduled delivery retries (sorted set ``keys.WEBHOOK_RETRIES_KEY``, score: due time)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._claim = r.register_script(_CLAIM_DUE)

    def schedule(self, job: dict, due: float) -> None:
        self.r.zadd(keys.WEBHOOK_RETRIES_KEY, {json.dumps(job, sort_keys=True): due})

    def claim_due(self, now: float, limit: int = 100) -> list[bytes]:
        return self._claim(keys=[keys.WEBHOOK_RETRIES_KEY], args=[now, now + RETRY_LEASE_S, limit])

    def done(self, member: bytes) -> None:
        self.r.zrem(keys.WEBHOOK_RETRIES_KEY, member)

    def count(self) -> int:
        return self.r.zcard(keys.WEBHOOK_RETRIES_KEY)


def release_due(retries: Retries, send: Callable[[dict], None], now: float) -> int:
    """Queue (``send``) every retry due at ``now``; how many."""
    n = 0
    for member in retries.claim_due(now):
        send(json.loads(member))
        retries.done(member)
        n += 1
    return n


class Undeliverable(PermanentError):
    """The event went to the dead letters (the task fails with this, so Celery counts a failure)."""


class Delivery:
    """One delivery attempt per task: delivered, retried later (scheduled in Redis), or dead-lettered.
    ``clock`` times the schedule and the endpoints' failures; signatures carry the real time."""

    def __init__(self, r: redis.Redis, settings: Settings, secrets: dict[Optional[str], Optional[str]],
                 clock: Callable[[], float] = time.time, timeout: float = TIMEOUT_S) -> None:
        self.r, self.settings, self.secrets, self.clock, self.timeout = r, settings, secrets, clock, timeout
        self.endpoints = Endpoints(r, settings.webhook_disable_after_s)
        self.retries = Retries(r)

    def attempt(self, event: dict, url: str, target: Optional[str] = None, attempt: int = 0) -> int:
        """The HTTP status when delivered; :class:`Undeliverable` when dead-lettered;
        ``celery.exceptions.Ignore`` when a retry was scheduled (neither success nor failure)."""
        name = target or redact(url)
        reason = self.endpoints.disabled(name)
        if reason:
            self._dead(event, url, name, f"endpoint disabled: {reason}")
        try:
            status = deliver_webhook(event, url, self.timeout, self.secrets.get(target, self.secrets[None]))
        except GoneError as exc:
            self._dead(event, url, name, self.endpoints.disable(name, str(exc), self.clock()))
        except PermanentError as exc:
            self._dead(event, url, name, str(exc))
        except TransientError as exc:
            self._failed(event, url, target, name, attempt, exc)
        metrics.WEBHOOK_DELIVERIES.labels(name, "delivered").inc()
        self.endpoints.succeeded(name)
        return status

    def _failed(self, event: dict, url: str, target: Optional[str], name: str, attempt: int,
                exc: TransientError) -> None:
        now = self.clock()
        disabled = self.endpoints.failed(name, now, str(exc))
        if disabled:
            self._dead(event, url, name, disabled)
        schedule = self.settings.webhook_retry_schedule_s
        if attempt >= len(schedule):
            self._dead(event, url, name, f"gave up after {attempt + 1} attempt(s): {exc}")
        wait = schedule[attempt]
        if exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self.settings.webhook_max_retry_after_s))
        self.retries.schedule({"event": event, "url": url, "target": target, "attempt": attempt + 1},
                              now + wait)
        metrics.WEBHOOK_DELIVERIES.labels(name, "retry").inc()
        metrics.CELERY_TASKS.labels("actionstream.deliver_webhook", "retry").inc()
        log.warning("webhook %s: event %s not delivered (attempt %d of %d): %s; next try in %.1f s", name,
                    event.get("id"), attempt + 1, len(schedule) + 1, exc, wait)
        raise Ignore()

    def _dead(self, event: dict, url: str, name: str, reason: str) -> None:
        reason = f"webhook {name}: not delivered: {reason}"
        event_id = event.get("id", "?") if isinstance(event, dict) else "?"
        pipe = self.r.pipeline(transaction=False)
        add_dead_letter(pipe, STAGE, keys.EVENTS_STREAM, event_id,
                        {"event": json.dumps(event), "target": name, "url": redact(url)}, reason,
                        self.settings.deadletter_maxlen)
        pipe.execute()
        metrics.count_dead(STAGE, [reason])
        metrics.WEBHOOK_DELIVERIES.labels(name, "dead_letter").inc()
        log.error("%s (event %s is in the dead letters)", reason, event_id)
        raise Undeliverable(reason)


class RetryReleaser(threading.Thread):
    """A daemon thread of the delivery worker: every ``interval`` s, queue the retries due."""

    def __init__(self, retries: Retries, send: Callable[[dict], None], interval: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="webhook-retries", daemon=True)
        self.retries, self.send, self.interval, self.clock = retries, send, interval, clock
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                release_due(self.retries, self.send, self.clock())
            except (redis.RedisError, OSError) as exc:  # the broker or Redis away: next round
                log.warning("webhook retries: %s: %s; trying again", exc.__class__.__name__, exc)
