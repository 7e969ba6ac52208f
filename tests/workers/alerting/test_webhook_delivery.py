"""Deliveries that never lie, checked by a real receiver verifying every signature with the
official ``standardwebhooks`` library (an implementation independent of the project's):
a redirect is a failed delivery and is not followed, ``Retry-After`` is honoured, the retry
schedule spans hours and ends in the dead letters, an endpoint answering 410 or failing for
``webhook_disable_after_s`` is disabled, and secrets follow the spec. End to end through a
real Celery worker whose retries come back from Redis."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import standardwebhooks

from shared import codec, keys, metrics
from shared.schemas import Event
from shared.settings import Settings, SettingsError
from tests.conftest import ROOT
from tests.webhook_receiver import WebhookReceiver
from workers.alerting import service as alerts
from workers.alerting import delivery, webhooks

KEY = bytes(range(32))
PADDED = "whsec_" + base64.b64encode(KEY[:25]).decode()  # 25 bytes: base64 ends in "=="
UNPADDED = PADDED.rstrip("=")


class Receiver(WebhookReceiver):
    """Per path a plan of answers (status or (status, headers); the last repeats). A delivery
    whose signature the official library refuses is answered 401 whatever the plan says."""

    def __init__(self, plan: dict[str, list], secret: str = PADDED):
        self.verifier, self.plan, self.arrivals = standardwebhooks.Webhook(secret), plan, []
        super().__init__(self.respond)

    def respond(self, path, headers, body):
        with self.lock:
            self.arrivals.append((path, time.monotonic()))
        try:
            self.verifier.verify(body, {k: v for k, v in headers.items()})
        except standardwebhooks.WebhookVerificationError:
            return 401
        with self.lock:
            answers = self.plan.get(path, [404])
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def times(self, path: str) -> list[float]:
        """When each POST to ``path`` arrived (monotonic)."""
        with self.lock:
            return [t for p, t in self.arrivals if p == path]


@pytest.fixture
def receiver():
    rec = Receiver({})
    yield rec
    rec.close()


def ev(n: int) -> Event:
    return Event(camera="cam-1", track_id=n, label="falling", label_index=1, score=0.9, frame_start=0,
                 frame_end=47 + n, ts_start=0.0, ts_end=1.6, model="fall", emitted_at=2.0)


def dead_letters(r) -> list:
    return [codec.decode_dead_letter(f) for _, f in r.xrange(keys.DEADLETTER_STREAM)]


# ---------------------------------------------------------------- secrets

@pytest.mark.parametrize("secret", [PADDED, UNPADDED])
def test_a_secret_padded_or_not_signs_what_the_official_library_verifies(receiver, secret):
    receiver.plan["/ok"] = [204]
    assert alerts.deliver_webhook(codec.event_to_dict(ev(1)), receiver.url("/ok"), secret=secret) == 204
    assert [c[1] for c in receiver.calls] == [204]


@pytest.mark.parametrize("size,ok", [(16, False), (23, False), (24, True), (64, True)])
def test_a_secret_needs_24_bytes(size, ok):
    secret = "whsec_" + base64.b64encode(KEY[:size] + bytes(max(0, size - 32))).decode()
    if ok:
        assert len(webhooks.secret_key(secret)) == size
        assert alerts.make_app(Settings(redis_url="redis://127.0.0.1:9/0", webhook_secret=secret))
    else:
        with pytest.raises(SettingsError, match="at least 24 bytes"):
            alerts.make_app(Settings(redis_url="redis://127.0.0.1:9/0", webhook_secret=secret))


# ---------------------------------------------------------------- one attempt

def test_a_redirect_is_a_failure_and_is_not_followed(receiver):
    """The bug: urllib followed a 302 with a GET (no body) and the worker counted a delivery."""
    receiver.plan["/moved"] = [(302, {"Location": receiver.url("/elsewhere")})]
    with pytest.raises(delivery.TransientError, match="302.*not followed"):
        alerts.deliver_webhook(codec.event_to_dict(ev(1)), receiver.url("/moved"), secret=PADDED)
    assert receiver.gets == [] and [c[0] for c in receiver.calls] == ["/moved"]


@pytest.mark.parametrize("header,wait", [("120", 120.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
                                         (None, None)])
def test_retry_after_is_read(receiver, header, wait):
    receiver.plan["/busy"] = [(503, {"Retry-After": header} if header else {})]
    with pytest.raises(delivery.TransientError) as err:
        alerts.deliver_webhook(codec.event_to_dict(ev(1)), receiver.url("/busy"), secret=PADDED)
    assert err.value.retry_after == wait


def _delivery(r, clock, **settings) -> delivery.Delivery:
    s = Settings(redis_url="redis://127.0.0.1:9/0", **settings)
    return delivery.Delivery(r, s, {None: PADDED}, clock=lambda: clock[0], timeout=5)


def test_the_schedule_spans_hours_then_the_dead_letters(r, receiver):
    """The default schedule (the spec's): each failed attempt is due again in Redis at the next
    wait, about 27 hours in all; after the last one the event is a dead letter with its reason."""
    from celery.exceptions import Ignore

    receiver.plan["/down"] = [500]
    clock = [1_000_000.0]
    d = _delivery(r, clock)
    schedule = Settings().webhook_retry_schedule_s
    assert sum(schedule) >= 24 * 3600
    body, url = codec.event_to_dict(ev(1)), receiver.url("/down")
    for attempt, wait in enumerate(schedule):
        with pytest.raises(Ignore):
            d.attempt(body, url, "down", attempt)
        ((member, due),) = r.zrange(keys.WEBHOOK_RETRIES_KEY, 0, -1, withscores=True)
        job = json.loads(member)
        assert job == {"event": body, "url": url, "target": "down", "attempt": attempt + 1}
        assert due == clock[0] + wait
        r.delete(keys.WEBHOOK_RETRIES_KEY)
        clock[0] += 60  # never long enough to disable the endpoint (a day)
    with pytest.raises(delivery.Undeliverable, match="gave up after 8 attempt"):
        d.attempt(body, url, "down", len(schedule))
    (dead,) = dead_letters(r)
    assert dead.message_id == ev(1).id and "500" in dead.reason and dead.stage == "alerts"
    assert json.loads(dead.fields["event"]) == body and r.zcard(keys.WEBHOOK_RETRIES_KEY) == 0


def test_retry_after_longer_than_the_schedule_is_honoured_up_to_the_cap(r, receiver):
    from celery.exceptions import Ignore

    receiver.plan["/busy"] = [(429, {"Retry-After": "7200"})]
    clock = [1_000.0]
    for cap, due in ((86400.0, 7200.0), (600.0, 600.0)):
        d = _delivery(r, clock, webhook_max_retry_after_s=cap)
        with pytest.raises(Ignore):
            d.attempt(codec.event_to_dict(ev(1)), receiver.url("/busy"), "busy", 0)
        assert r.zrange(keys.WEBHOOK_RETRIES_KEY, 0, -1, withscores=True)[0][1] == clock[0] + due
        r.delete(keys.WEBHOOK_RETRIES_KEY)


def test_410_disables_the_endpoint_and_later_events_go_to_the_dead_letters(r, receiver):
    receiver.plan["/gone"] = [410]
    d = _delivery(r, [5.0])
    with pytest.raises(delivery.Undeliverable, match="410"):
        d.attempt(codec.event_to_dict(ev(1)), receiver.url("/gone"), "gone", 0)
    with pytest.raises(delivery.Undeliverable, match="endpoint disabled"):
        d.attempt(codec.event_to_dict(ev(2)), receiver.url("/gone"), "gone", 0)
    assert len(receiver.calls) == 1  # the second event was never sent to a disabled endpoint
    assert [x.message_id for x in dead_letters(r)] == [ev(1).id, ev(2).id]
    assert d.endpoints.report() == {"gone": d.endpoints.disabled("gone")}
    assert metrics.WEBHOOK_DISABLED.labels("gone")._value.get() == 1
    d.endpoints.enable("gone")
    receiver.plan["/gone"] = [204]
    assert d.attempt(codec.event_to_dict(ev(3)), receiver.url("/gone"), "gone", 0) == 204


def test_an_endpoint_failing_for_a_day_is_disabled_and_a_success_resets_the_count(r, receiver):
    from celery.exceptions import Ignore

    receiver.plan["/flaky"] = [503]
    clock = [0.0]
    d = _delivery(r, clock)
    body, url = codec.event_to_dict(ev(1)), receiver.url("/flaky")
    for t, answer in ((0, 503), (80000, 204), (80001, 503), (160000, 503)):
        clock[0] = t
        receiver.plan["/flaky"] = [answer]
        if answer == 204:
            assert d.attempt(body, url, "flaky", 0) == 204
        else:  # failing since 80001 only: 160000 is under a day later
            with pytest.raises(Ignore):
                d.attempt(body, url, "flaky", 0)
    clock[0] = 80001 + 86400
    with pytest.raises(delivery.Undeliverable, match="failing for 86400 s"):
        d.attempt(body, url, "flaky", 1)
    assert "failing for" in d.endpoints.disabled("flaky")


# ---------------------------------------------------------------- end to end

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def worker(r, redis_url, tmp_path):
    """A real delivery worker: the schedule in fractions of a second, its metrics on a free port."""
    port = _free_port()
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_LOG_LEVEL="INFO",
               ACTIONSTREAM_WEBHOOK_SECRET=PADDED, ACTIONSTREAM_WEBHOOK_RETRY_SCHEDULE_S="[0.2, 0.2, 0.2]",
               ACTIONSTREAM_METRICS_PORT=str(port))
    log = tmp_path / "worker.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "workers", "alerts-worker", "--concurrency", "1"],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT)
    yield proc, log, f"http://127.0.0.1:{port}/metrics"
    proc.terminate()
    proc.wait(timeout=30)


def _wait(what, timeout: float = 60.0):
    end = time.monotonic() + timeout  # a hang guard
    while not what():
        assert time.monotonic() < end
        time.sleep(0.05)


def _forward(r, redis_url, targets: dict[str, str], n: int) -> None:
    for i in range(1, n + 1):
        r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(ev(i))})
    settings = Settings(redis_url=redis_url)
    rules = alerts.AlertRules(alerts.parse_config({"targets": {k: {"webhook": u} for k, u in targets.items()},
                                                   "rules": [{"targets": sorted(targets)}]}, "test"))
    alerts.AlertForwarder(r, alerts.make_app(settings), rules=rules, block_ms=50).run(burst=True)


@pytest.mark.integration
def test_through_a_worker_no_alert_is_lost_or_counted_as_delivered_when_it_was_not(r, redis_url, receiver,
                                                                                    worker):
    """A redirecting endpoint: never a GET, each event dead-lettered after the schedule, none
    counted as delivered. A flapping one (503, 302, then 2xx): each event delivered, verified,
    with one webhook-id over its attempts. A gone one: disabled, reported in the metrics."""
    proc, log, metrics_url = worker
    receiver.plan.update({"/moved": [(302, {"Location": receiver.url("/elsewhere")})],
                          "/flap": [503, (301, {"Location": "/x"}), 503, 204], "/gone": [410]})
    _forward(r, redis_url, {"moved": receiver.url("/moved"), "flap": receiver.url("/flap"),
                            "gone": receiver.url("/gone")}, 3)
    want = sorted(ev(i).id for i in (1, 2, 3))
    _wait(lambda: sorted(e["id"] for e in receiver.bodies("/flap", 204)) == want)
    _wait(lambda: len(dead_letters(r)) == 6)  # moved: 3 given up; gone: 1 at 410 + 2 disabled
    dead = dead_letters(r)
    assert sorted(d.message_id for d in dead if "webhook moved" in d.reason) == want
    assert all("gave up after 4 attempt" in d.reason and "302" in d.reason
               for d in dead if "webhook moved" in d.reason)
    assert sum(1 for p, *_ in receiver.calls if p == "/moved") == 12 and receiver.gets == []
    assert sum(1 for p, *_ in receiver.calls if p == "/gone") == 1
    assert all(c[1] != 401 for c in receiver.calls)  # every attempt verified by standardwebhooks
    ids = [h["webhook-id"] for p, _, h, _ in receiver.calls if p == "/flap"]
    assert sorted(set(ids)) == want
    got = metrics.scrape(metrics_url)
    counted = {k: v for k, v in got.items() if k.startswith("actionstream_webhook_deliveries_total")}
    assert counted.get('actionstream_webhook_deliveries_total{outcome="delivered",target="moved"}', 0) == 0
    assert counted['actionstream_webhook_deliveries_total{outcome="dead_letter",target="moved"}'] == 3
    assert counted['actionstream_webhook_deliveries_total{outcome="delivered",target="flap"}'] == 3
    assert got['actionstream_webhook_endpoint_disabled{target="gone"}'] == 1
    assert "DISABLED" in log.read_text() and proc.poll() is None


@pytest.mark.integration
def test_through_a_worker_retry_after_is_honoured(r, redis_url, receiver, worker):
    receiver.plan["/busy"] = [(503, {"Retry-After": "2"}), 204]
    _forward(r, redis_url, {"busy": receiver.url("/busy")}, 1)
    _wait(lambda: len(receiver.bodies("/busy", 204)) == 1)
    first, second = receiver.times("/busy")
    assert second - first >= 2  # the schedule alone would have waited 0.2 s
