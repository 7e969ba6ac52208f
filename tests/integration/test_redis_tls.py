"""rediss:// everywhere, against a real Redis serving TLS (Debian's redis-server: the embedded
valkey has no TLS) with a certificate of a test CA (trustme), given to every process as
ACTIONSTREAM_REDIS_CA_FILE: the producer and the pose worker, the web app, the alert
forwarder queueing its Celery tasks (kombu over TLS), and the ACL user from the settings.
A client that does not trust the CA is refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.redis_server import RedisServer, free_port
from tests.conftest import ROOT
from tests.workers.web import pipeline as pl
from tests.workers.web.pipeline import CAMERA

pytestmark = pytest.mark.integration
TLS_SERVER = shutil.which("redis-server", path="/usr/bin")


def _has_tls(binary: str | None) -> bool:
    if binary is None:
        return False
    out = subprocess.run([binary, "--port", "0", "--tls-port", "1", "--save", ""], capture_output=True,
                         text=True, timeout=10)
    return "TLS support" not in out.stdout + out.stderr  # "Failed finding TLS support": built without


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """(rediss:// URL of a real TLS server, its CA file)."""
    if not _has_tls(TLS_SERVER):
        pytest.skip("no redis-server with TLS (apt-get install redis-server)")
    trustme = pytest.importorskip("trustme")
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    cert.private_key_pem.write_to_path(str(folder / "server.key"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    port = free_port()
    args = ["--tls-port", str(port), "--tls-cert-file", str(folder / "server.pem"),
            "--tls-key-file", str(folder / "server.key"), "--tls-ca-cert-file", str(folder / "ca.pem"),
            "--tls-auth-clients", "no", "--aclfile", str(folder / "users.acl")]
    (folder / "users.acl").write_text("user default on nopass ~* &* +@all\nuser web on >web-password "
                                      "%R~actionstream:* -@all +@connection +@read +info +time\n")
    with RedisServer(binary=TLS_SERVER, extra_args=args):
        yield f"rediss://127.0.0.1:{port}/0", folder / "ca.pem"


def _env(url: str, ca: Path, tmp_path, **extra) -> dict:
    return pl.web_env(url, tmp_path, ACTIONSTREAM_REDIS_CA_FILE=str(ca), **extra)


def test_a_client_without_the_ca_is_refused(tls_redis):
    url, ca = tls_redis
    with redis.Redis.from_url(url) as r, pytest.raises(redis.exceptions.ConnectionError, match="certificate"):
        r.ping()
    with redis.Redis.from_url(f"{url}?ssl_ca_certs={ca}") as r:
        assert r.ping()


def test_the_stages_and_the_page_work_over_tls(tls_redis, tmp_path, monkeypatch):
    from shared.settings import load_settings

    url, ca = tls_redis
    monkeypatch.setenv("ACTIONSTREAM_REDIS_CA_FILE", str(ca))
    s = load_settings(redis_url=url)
    assert s.redis_url.startswith("rediss://") and "ssl_ca_certs=" in s.redis_url
    with redis.Redis.from_url(s.redis_url) as r:
        r.flushdb()
        pl.publish(s.redis_url, frames=4)
        pl.run_pose(s.redis_url, pl.load_movenet())
        assert r.xlen(keys.skeletons_stream(CAMERA)) >= 4
        assert pl.write_event(r, pl.falling(3))
    monkeypatch.setenv("ACTIONSTREAM_REDIS_USERNAME", "web")  # the web user, from the settings
    monkeypatch.setenv("ACTIONSTREAM_REDIS_PASSWORD", "web-password")
    web = pl.settings(url, data_dir=tmp_path)
    assert web.redis_url.startswith("rediss://web:web-password@")
    with pl.serving(web) as base:
        assert [c["id"] for c in pl.get_json(base + "/api/cameras")[1]["cameras"]] == [CAMERA]
        assert pl.get(f"{base}/api/cameras/{CAMERA}/view.jpg")[0] == 200
        assert len(pl.get_json(base + "/api/events")[1]["events"]) == 1


def test_celery_queues_the_alert_tasks_over_tls(tls_redis, tmp_path):
    """The alert forwarder (a real process) reads the event and queues its delivery task on
    Celery's broker: the same TLS Redis, reached by kombu with the CA of the settings."""
    url, ca = tls_redis
    with redis.Redis.from_url(f"{url}?ssl_ca_certs={ca}") as r:
        r.flushdb()
        assert pl.write_event(r, pl.falling(9))
        done = subprocess.run([sys.executable, "-m", "workers", "alerts", "--burst", "--webhook",
                               "http://127.0.0.1:9/hook"], cwd=ROOT, env=_env(url, ca, tmp_path),
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        from shared.celeryconf import ALERTS_QUEUE

        queued = [k for k in r.scan_iter(f"{ALERTS_QUEUE}*") if r.type(k) == b"list"]
        assert sum(r.llen(k) for k in queued) == 1, queued
