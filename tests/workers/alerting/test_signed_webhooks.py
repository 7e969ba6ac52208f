"""Signed webhooks (Standard Webhooks): a real HTTP receiver on a free loopback port checks
each delivery with the spec's algorithm, written here independently of the project's code;
a tampered body or a wrong secret is rejected. End to end: events -> rules -> a real Celery
worker that signs with the secrets it reads itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from shared import codec, keys
from shared.schemas import Event
from shared.settings import Settings, SettingsError
from tests.conftest import ROOT
from tests.webhook_receiver import WebhookReceiver
from workers.alerting import service as alerts

SECRET_A = "whsec_" + base64.b64encode(b"secret-of-target-a-32-bytes-long").decode()
SECRET_B = "whsec_" + base64.b64encode(bytes(range(24))).decode()


def verify(secret: str, headers, body: bytes, tolerance_s: float = 300) -> bool:
    """The spec: HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}" with the base64
    key after ``whsec_``, base64, compared with each "v1,<sig>" of webhook-signature."""
    msg_id, ts, sigs = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and ts and sigs) or abs(time.time() - int(ts)) > tolerance_s:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest())
    return any(version == "v1" and hmac.compare_digest(sig.encode(), expected)
               for version, _, sig in (s.partition(",") for s in sigs.split()))


class Receiver(WebhookReceiver):
    """Per path the secret to verify with; 204 when the signature holds, 401 when not."""

    def __init__(self, secrets: dict[str, str]):
        super().__init__(lambda path, headers, body: 204 if verify(secrets[path], headers, body) else 401)

    def verified(self, path: str) -> list[dict]:
        return self.bodies(path, 204)

    def wait(self, path: str, n: int, timeout: float = 60.0) -> list[dict]:
        return super().wait(path, n, 204, timeout)


@pytest.fixture
def receiver():
    rec = Receiver({"/a": SECRET_A, "/b": SECRET_B})
    yield rec
    rec.server.shutdown()


def ev(n: int, camera: str = "cam-1", score: float = 0.9) -> Event:
    return Event(camera=camera, track_id=n, label="falling", label_index=1, score=score, frame_start=0,
                 frame_end=47 + n, ts_start=0.0, ts_end=1.6, model="fall", emitted_at=2.0)


def test_a_delivery_is_signed_and_verifies(receiver):
    body = codec.event_to_dict(ev(1))
    assert alerts.deliver_webhook(body, receiver.url("/a"), secret=SECRET_A) == 204
    ((path, code, headers, raw),) = receiver.calls
    assert code == 204 and headers["webhook-id"] == ev(1).id == headers["Idempotency-Key"]
    assert headers["webhook-signature"].startswith("v1,") and json.loads(raw) == body


@pytest.mark.parametrize("tamper", ["body", "timestamp", "id", "secret"])
def test_a_tampered_delivery_is_rejected(receiver, tamper):
    """A delivery signed for /a, replayed with one part changed: the receiver refuses it."""
    assert alerts.deliver_webhook(codec.event_to_dict(ev(1)), receiver.url("/a"), secret=SECRET_A) == 204
    (_, _, headers, body) = receiver.calls[0]
    headers = {k.lower(): v for k, v in headers.items() if k.lower().startswith("webhook-")}
    path = "/a"
    if tamper == "body":
        body = body.replace(b'"score":0.9', b'"score":0.1')
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) + 1)
    elif tamper == "id":
        headers["webhook-id"] = "another-id"
    else:
        path = "/b"  # verified with the other target's secret
    req = urllib.request.Request(receiver.url(path), data=body, method="POST", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401


def test_without_a_secret_the_headers_say_so(receiver):
    with pytest.raises(alerts.PermanentError, match="401"):  # unsigned: the receiver refuses it
        alerts.deliver_webhook(codec.event_to_dict(ev(1)), receiver.url("/a"))
    headers = receiver.calls[0][2]
    assert "webhook-signature" not in headers and headers["webhook-id"] == ev(1).id


@pytest.mark.parametrize("secret", ["hunter2", "whsec_not*base64",
                                    "whsec_" + base64.b64encode(b"short").decode()])
def test_a_bad_default_secret_is_a_settings_error(secret):
    with pytest.raises(SettingsError, match="ACTIONSTREAM_WEBHOOK_SECRET"):
        alerts.make_app(Settings(redis_url="redis://127.0.0.1:9/0", webhook_secret=secret))


@pytest.mark.integration
def test_events_reach_receivers_signed_per_target(r, redis_url, receiver, tmp_path):
    """Target a signs with its own secret from the alerts config, target b with the default
    (ACTIONSTREAM_WEBHOOK_SECRET); the rules send cam-2's events to a only."""
    config = tmp_path / "alerts.yaml"
    config.write_text(json.dumps({
        "targets": {"a": {"webhook": receiver.url("/a"), "secret": SECRET_A},
                    "b": {"webhook": receiver.url("/b")}},
        "rules": [{"targets": ["a"]}, {"cameras": ["cam-1"], "min_score": 0.5, "targets": ["b"]}]}))
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_ALERTS_CONFIG=str(config),
               ACTIONSTREAM_WEBHOOK_SECRET=SECRET_B, ACTIONSTREAM_LOG_LEVEL="INFO")
    log = tmp_path / "worker.log"
    with open(log, "w") as fh:
        worker = subprocess.Popen([sys.executable, "-m", "workers", "alerts-worker",
                                   "--concurrency", "1"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                  stdout=fh, stderr=subprocess.STDOUT)
    try:
        for e in (ev(1), ev(2, camera="cam-2"), ev(3, score=0.2)):
            r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(e)})
        settings = Settings(redis_url=redis_url, alerts_config=config)
        rules = alerts.alert_rules(settings)
        sent = alerts.AlertForwarder(r, alerts.make_app(settings), rules=rules, block_ms=100).run(burst=True)
        assert sent == 4  # a: all three; b: cam-1 at 0.9 only
        a, b = receiver.wait("/a", 3), receiver.wait("/b", 1)
        assert sorted(e["id"] for e in a) == sorted(x.id for x in (ev(1), ev(2, "cam-2"), ev(3)))
        assert [e["id"] for e in b] == [ev(1).id]
        assert all(code == 204 for _, code, _, _ in receiver.calls), log.read_text()[-3000:]
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_task_messages_name_the_target_not_its_secret(r, redis_url, tmp_path):
    """The forwarder queues (event, url, target); the secret stays with the worker (Flower and
    the broker show task arguments)."""
    config = tmp_path / "alerts.yaml"
    config.write_text(json.dumps({"targets": {"a": {"webhook": "http://127.0.0.1:9/a", "secret": SECRET_A}},
                                  "rules": [{"targets": ["a"]}]}))
    r.xadd(keys.EVENTS_STREAM, {"event": codec.encode_event(ev(1))})
    settings = Settings(redis_url=redis_url, alerts_config=config)
    fwd = alerts.AlertForwarder(r, alerts.make_app(settings), rules=alerts.alert_rules(settings), block_ms=50)
    assert fwd.run(burst=True) == 1
    (raw,) = r.lrange(alerts.QUEUE, 0, -1)
    args, kwargs, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert args == [codec.event_to_dict(ev(1)), "http://127.0.0.1:9/a"] and kwargs == {"target": "a"}
    assert SECRET_A.removeprefix("whsec_").encode() not in raw
