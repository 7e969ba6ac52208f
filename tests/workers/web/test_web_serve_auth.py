"""`actionstream web` as a process with its login: refused without one off loopback, the first
admin's password printed once, HTTPS with a real certificate (trustme), `up`'s page on
loopback without a login, and `actionstream users` against the same database."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT
from tests.workers.web import pipeline as pl
from tests.workers.web.test_web_auth import cookie_of, login, request
from workers.web.server import WebSupervisor

pytestmark = pytest.mark.integration
READY = r"page is at (\S+)"


def cli(env: dict, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_no_auth_off_loopback_is_refused_in_one_line_before_anything_listens(redis_url, tmp_path):
    proc = cli(pl.web_env(redis_url, tmp_path), "web", "--host", "0.0.0.0", "--port", "0", "--no-auth")
    assert proc.returncode == 2
    (line,) = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert line.startswith("actionstream web: error: --no-auth serves the page to anyone")
    assert "0.0.0.0" in line


def test_the_first_start_makes_an_admin_and_prints_its_password_once(r, redis_url, tmp_path):
    env = pl.web_env(redis_url, tmp_path)
    with pl.process(["web", "--port", "0"], env, ready=READY) as (_, lines, url):
        base = url.group(1).rstrip("/")
        printed = re.findall(r"log in as admin with password (\S+)", "".join(lines))
        assert len(printed) == 1, "".join(lines)
        assert request(base, "GET", "/api/cameras")[0] == 401
        status, headers, _ = login(base, "admin", printed[0])
        assert status == 200
        assert request(base, "GET", "/api/cameras", {"Cookie": cookie_of(headers)})[0] == 200
    with pl.process(["web", "--port", "0"], env, ready=READY) as (_, lines, url):
        assert "password" not in "".join(lines)  # shown once: the admin exists now
        assert login(url.group(1).rstrip("/"), "admin", printed[0])[0] == 200


def test_the_first_admins_password_may_come_from_a_secret_file(r, redis_url, tmp_path):
    secret = tmp_path / "admin-password"
    secret.write_text("from-a-secret-file\n")
    env = pl.web_env(redis_url, tmp_path, ACTIONSTREAM_WEB_ADMIN_PASSWORD_FILE=str(secret))
    with pl.process(["web", "--port", "0"], env, ready=READY) as (_, lines, url):
        assert "from-a-secret-file" not in "".join(lines)
        assert login(url.group(1).rstrip("/"), "admin", "from-a-secret-file")[0] == 200


def test_https_with_a_certificate_and_a_secure_cookie(r, redis_url, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "web.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "web.key"))
    env = pl.web_env(redis_url, tmp_path, ACTIONSTREAM_WEB_ADMIN_PASSWORD="tls-admin-password")
    args = ["web", "--port", "0", "--tls-cert", str(tmp_path / "web.pem"),
            "--tls-key", str(tmp_path / "web.key")]
    with pl.process(args, env, ready=READY) as (_, _, url):
        base = url.group(1)
        assert base.startswith("https://127.0.0.1:")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        body = json.dumps({"user": "admin", "password": "tls-admin-password"}).encode()
        req = urllib.request.Request(base + "api/login", method="POST", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=context, timeout=30) as resp:
            assert resp.status == 200
            attrs = [a.strip().lower() for a in resp.headers["set-cookie"].split(";")]
        assert "secure" in attrs and "httponly" in attrs
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(base + "api/health", context=ssl.create_default_context(), timeout=30)
        with pytest.raises(http_errors()):  # plain HTTP on the HTTPS port gets no page
            request(base.replace("https://", "http://").rstrip("/"), "GET", "/api/health")


def http_errors() -> tuple:
    import http.client

    return (http.client.HTTPException, ConnectionError)


def test_ups_page_needs_no_login_on_loopback_only():
    with socket.socket() as loop, socket.socket() as every:
        loop.bind(("127.0.0.1", 0))
        every.bind(("0.0.0.0", 0))  # bound, never listening: nothing reaches it
        assert "--no-auth" in WebSupervisor(loop, {}).children[0].spec.argv
        assert "--no-auth" not in WebSupervisor(every, {}).children[0].spec.argv


def test_the_users_command_adds_lists_changes_and_deletes_users(tmp_path):
    from workers.history.users import UserStore

    env = pl.web_env("redis://127.0.0.1:1/0", tmp_path)
    assert cli(env, "users", "add", "vera", "--password-stdin", stdin="vera-password\n").returncode == 0
    made = cli(env, "users", "add", "olga", "--role", "admin")  # no terminal: a random one, shown once
    password = re.search(r"password (\S+) \(shown once\)", made.stdout).group(1)
    token = cli(env, "users", "token", "vera", "--label", "script").stdout.strip()
    listed = [json.loads(ln) for ln in cli(env, "users", "list", "--json").stdout.splitlines()]
    assert [(u["name"], u["role"], u["tokens"]) for u in listed] == [("olga", "admin", 0),
                                                                      ("vera", "viewer", 1)]
    twice = cli(env, "users", "add", "vera", "--password-stdin", stdin="x" * 10)
    assert twice.returncode == 2 and "exists already" in twice.stderr
    short = cli(env, "users", "passwd", "vera", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    assert cli(env, "users", "passwd", "vera", "--password-stdin", stdin="vera-password-2\n").returncode == 0
    store = UserStore(env["ACTIONSTREAM_HISTORY_URL"])
    try:
        assert store.verify("olga", password).admin
        assert store.verify("vera", "vera-password") is None and store.verify("vera", "vera-password-2")
        assert store.resolve(token).name == "vera"
        assert cli(env, "users", "del", "vera").returncode == 0
        assert store.get("vera") is None and store.resolve(token) is None
    finally:
        store.close()
