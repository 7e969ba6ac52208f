"""Alert delivery: events stream -> `actionstream alerts` -> a real Celery worker -> webhooks
served by a real HTTP server; Celery refuses anything but JSON."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from shared import codec, keys
from shared.schemas import Event
from shared.settings import Settings
from tests.conftest import ROOT
from tests.webhook_receiver import WebhookReceiver, planned
from workers.alerting import service as alerts


class Hooks(WebhookReceiver):
    """A webhook server: per path a list of status codes to answer with (the last repeats)."""

    def __init__(self, plan: dict[str, list[int]]):
        super().__init__(planned(plan))

    def delivered(self, path: str) -> list[dict]:
        return self.bodies(path, 200)

    def wait(self, path: str, n: int, timeout: float = 60.0) -> list[dict]:
        return super().wait(path, n, 200, timeout)


@pytest.fixture
def hooks():
    h = Hooks({"/ok": [200], "/flaky": [503, 503, 200], "/gone": [404]})
    yield h
    h.server.shutdown()


@pytest.fixture
def celery_worker(r, redis_url, tmp_path):
    log = tmp_path / "worker.log"
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_LOG_LEVEL="INFO",
               ACTIONSTREAM_WEBHOOK_RETRY_SCHEDULE_S="[0.2, 0.5, 1]")  # retries within seconds
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "workers", "alerts-worker",
                                 "--concurrency", "1"], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
    yield proc, log
    proc.terminate()
    proc.wait(timeout=30)


def event(n: int) -> Event:
    return Event(camera="cam-1", track_id=n, label="falling", label_index=1, score=0.9,
                 frame_start=0, frame_end=47 + n, ts_start=0.0, ts_end=1.6, model="fall",
                 emitted_at=2.0)


def test_celery_is_json_only():
    config = alerts.celery_config(Settings(redis_url="redis://h:1/0"))
    assert config["accept_content"] == ["json"] and config["task_serializer"] == "json"
    assert config["result_accept_content"] == ["json"] and "broker_use_ssl" not in config
    tls = alerts.celery_config(Settings(redis_url="rediss://u:p@h:1/0"))
    assert tls["broker_use_ssl"]["ssl_cert_reqs"] is not None


@pytest.mark.parametrize("path,payload,error", [
    ("/ok", "event", None),
    ("/gone", "event", alerts.PermanentError),       # 4xx: retrying cannot help
    ("/flaky", "event", alerts.TransientError),      # 5xx: retried by Celery
    ("/ok", {"camera": "cam-1"}, alerts.PermanentError),  # not an event: nothing sent
    ("closed-port", "event", alerts.TransientError),
])
def test_deliver_webhook(hooks, path, payload, error):
    url = "http://127.0.0.1:9/x" if path == "closed-port" else hooks.url(path)
    body = codec.event_to_dict(event(1)) if payload == "event" else payload
    if error is None:
        assert alerts.deliver_webhook(body, url) == 200
        (got,) = hooks.delivered(path)
        assert got == body
        assert hooks.calls[-1][2]["Idempotency-Key"] == event(1).id
    else:
        with pytest.raises(error):
            alerts.deliver_webhook(body, url, timeout=2.0)
        if payload != "event":
            assert hooks.calls == []


@pytest.mark.integration
def test_events_reach_webhooks_through_celery(r, redis_url, hooks, celery_worker):
    evs = [event(1), event(2)]
    for ev in evs:
        r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(ev)})
    r.xadd(keys.EVENTS_STREAM, {"event": b'{"schema_version": 1, "camera": '})  # truncated
    app = alerts.make_app(Settings(redis_url=redis_url))
    sent = alerts.forward_events(r, app, [hooks.url("/ok"), hooks.url("/flaky")], burst=True,
                                 block_ms=200)
    assert sent == 4
    assert r.xpending(keys.EVENTS_STREAM, alerts.ALERTS_GROUP)["pending"] == 0
    (dead,) = r.xrange(keys.DEADLETTER_STREAM)
    assert "undecodable event" in codec.decode_dead_letter(dead[1]).reason

    ok = hooks.wait("/ok", 2)
    flaky = hooks.wait("/flaky", 2)  # after 503s: retried with backoff
    want = sorted(ev.id for ev in evs)
    assert sorted(e["id"] for e in ok) == want and sorted(e["id"] for e in flaky) == want
    assert sum(1 for p, code, _, _ in hooks.calls if p == "/flaky" and code == 503) == 2

    # a second pass finds nothing new: acked events are not sent again
    assert alerts.forward_events(r, app, [hooks.url("/ok")], burst=True, block_ms=200) == 0


@pytest.mark.integration
def test_the_worker_refuses_pickle_and_goes_on(r, redis_url, hooks, celery_worker):
    proc, log = celery_worker
    app = alerts.make_app(Settings(redis_url=redis_url))
    bad, good = event(1), event(2)
    app.send_task(alerts.DELIVER_TASK, args=[codec.event_to_dict(bad), hooks.url("/ok")],
                  queue=alerts.QUEUE, serializer="pickle")
    app.send_task(alerts.DELIVER_TASK, args=[codec.event_to_dict(good), hooks.url("/ok")],
                  queue=alerts.QUEUE)
    got = hooks.wait("/ok", 1)
    assert [e["id"] for e in got] == [good.id]
    time.sleep(1.0)
    assert [e["id"] for e in hooks.delivered("/ok")] == [good.id]  # the pickled one never ran
    assert proc.poll() is None
    text = log.read_text()
    assert "pickle" in text and ("disallowed" in text.lower() or "refus" in text.lower()), text[-3000:]


@pytest.mark.parametrize("webhook,rc", [("ftp://example/x", 2), ("http://127.0.0.1:9/x", 0)])
def test_alerts_cli(r, redis_url, webhook, rc, capsys):
    from workers.console.cli import main

    assert main(["alerts", "--redis", redis_url, "--webhook", webhook, "--burst"]) == rc
    if rc:
        assert "not an http(s) URL" in capsys.readouterr().err
    else:  # nothing waiting: the group exists and nothing was queued
        assert r.xinfo_groups(keys.EVENTS_STREAM)[0]["name"] == alerts.ALERTS_GROUP.encode()


def _crashed_consumer_holds(r, consumer: str, evs) -> None:
    """``consumer`` read ``evs`` from the events stream and died before acking them."""
    from shared.redisio import ensure_group

    for ev in evs:
        r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(ev)})
    ensure_group(r, keys.EVENTS_STREAM, alerts.ALERTS_GROUP)
    r.xreadgroup(alerts.ALERTS_GROUP, consumer, {keys.EVENTS_STREAM: ">"})
    assert r.xpending(keys.EVENTS_STREAM, alerts.ALERTS_GROUP)["pending"] == len(evs)


@pytest.mark.parametrize("crashed,claim_idle_ms", [
    ("alerts-1", 3_600_000),  # the same stable name: a restart reads its own pending events
    ("pod-7", 50),            # another pod's name: claimed once idle for claim_idle_ms
])
def test_a_restarted_forwarder_picks_up_the_crashed_ones_pending_events(r, redis_url, crashed,
                                                                       claim_idle_ms):
    evs = [event(1), event(2)]
    _crashed_consumer_holds(r, crashed, evs)
    end = time.monotonic() + 30  # a hang guard: wait until the events count as stale
    while min(p["time_since_delivered"] for p in r.xpending_range(
            keys.EVENTS_STREAM, alerts.ALERTS_GROUP, "-", "+", 10)) <= claim_idle_ms < 60_000:
        assert time.monotonic() < end
        time.sleep(0.01)
    app = alerts.make_app(Settings(redis_url=redis_url))
    fwd = alerts.AlertForwarder(r, app, ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"],
                                consumer="alerts-1", block_ms=50, claim_idle_ms=claim_idle_ms)
    assert fwd.run(burst=True) == 4 and fwd.metrics["events"] == 2
    assert fwd.metrics["claimed"] == (2 if crashed != "alerts-1" else 0)
    assert r.xpending(keys.EVENTS_STREAM, alerts.ALERTS_GROUP)["pending"] == 0
    assert r.llen(alerts.QUEUE) == 4  # the delivery tasks are on the Celery queue


def test_the_default_consumer_name_is_stable(r, redis_url):
    settings = Settings(redis_url=redis_url)
    assert alerts.run_alerts(settings, ["http://127.0.0.1:9/x"], burst=True) == 0
    (consumer,) = r.xinfo_consumers(keys.EVENTS_STREAM, alerts.ALERTS_GROUP)
    assert consumer["name"].decode() == settings.alerts_consumer == "alerts-1"


def test_the_forwarder_reconnects_after_a_redis_restart(tmp_path):
    """Redis goes away and comes back (empty): the forwarder backs off, makes its group
    again and forwards what arrives after."""
    import redis as redis_lib

    from shared.redis_server import RedisServer

    server = RedisServer().start()
    try:
        client = redis_lib.Redis.from_url(server.url, socket_timeout=2)
        app = alerts.make_app(Settings(redis_url=server.url))
        fwd = alerts.AlertForwarder(client, app, ["http://127.0.0.1:9/x"], block_ms=50)
        thread = threading.Thread(target=fwd.run, daemon=True)
        thread.start()
        port = server.port
        server.stop()
        end = time.monotonic() + 30  # hang guards, not speed measurements
        while fwd.metrics["reconnects"] == 0:
            assert time.monotonic() < end
            time.sleep(0.01)
        server = RedisServer(port=port).start()
        client.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(event(3))})
        while fwd.metrics["events"] < 1:
            assert time.monotonic() < end, fwd.metrics
            time.sleep(0.01)
        fwd.request_stop()
        thread.join(30)
        assert client.xpending(keys.EVENTS_STREAM, alerts.ALERTS_GROUP)["pending"] == 0
    finally:
        server.cleanup()
