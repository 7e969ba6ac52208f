"""`actionstream web` as a process, and the web page `up` starts."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from tests.conftest import ROOT
from tests.procs import wait_until
from tests.workers.web.pipeline import get, get_json
from workers.web.server import bind, free_port, page_url

pytestmark = pytest.mark.integration


def _env(redis_url: str, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    env.update(ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_DATA_DIR=str(tmp_path))
    return env


def test_a_port_in_use_is_a_one_line_error(redis_url, tmp_path):
    with bind("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "workers", "web", "--port", str(port)], cwd=ROOT,
                              env=_env(redis_url, tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1
    assert lines[0].startswith(f"actionstream web: error: cannot listen on 127.0.0.1:{port}")
    assert "--port" in lines[0]


def _serve(redis_url, tmp_path):
    """``web --no-auth`` on a free loopback port: (the process, its stderr lines as read, the reader)."""
    proc = subprocess.Popen([sys.executable, "-m", "workers", "web", "--port", "0", "--no-auth"],
                            cwd=ROOT, env=_env(redis_url, tmp_path), stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    return proc, lines, reader


def _page_url(lines: list[str]) -> str:
    url = wait_until(lambda: next((m.group(1) for m in map(re.compile(r"page is at (\S+)").search,
                                                            list(lines)) if m), None), 60)
    assert url, "".join(lines)
    return url


def test_sigterm_stops_the_server_with_a_live_connection_open_and_exits_0(redis_url, tmp_path):
    proc, lines, reader = _serve(redis_url, tmp_path)
    try:
        url = _page_url(lines)
        assert get_json(url + "api/health")[0] == 200
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request("GET", "/api/events/live")
        resp = conn.getresponse()
        assert resp.readline().startswith(b"retry:")  # the live stream is open
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    assert code == 0, "".join(lines)
    assert "web: stopped" in "".join(lines)


def test_sigterm_ends_the_open_live_streams_cleanly_and_logs_no_traceback(r, redis_url, tmp_path):
    """An open page holds a live stream (or two, with two tabs): stopping the server ends
    them as streams end (the client reads to the end), within the graceful timeout, and
    nothing is cancelled or logged as an error."""
    import http.client
    from urllib.parse import urlsplit

    from workers.web.server import GRACEFUL_S

    proc, lines, reader = _serve(redis_url, tmp_path)
    try:
        url = _page_url(lines)
        parts = urlsplit(url)
        streams = []
        for _ in range(2):
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            conn.request("GET", "/api/events/live")
            resp = conn.getresponse()
            assert resp.readline().startswith(b"retry:")
            streams.append((conn, resp))
        for conn, resp in streams:  # both streams read the events stream now
            assert wait_until(lambda: b"event: ready" in resp.readline(), 10)
        proc.send_signal(signal.SIGTERM)
        for conn, resp in streams:
            resp.read()  # to the stream's end: an IncompleteRead were it cut off
            conn.close()
        code = proc.wait(GRACEFUL_S + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    log = "".join(lines)
    assert code == 0 and "web: stopped" in log, log
    for word in ("Traceback", "ERROR", "Cancel", "timeout graceful shutdown"):
        assert word not in log, log


def test_up_starts_the_page_on_a_free_port_when_its_own_is_taken(redis_url, tmp_path, capsys):
    from shared.supervisor import child_env
    from workers.console.up import _start_web

    assert _start_web(argparse.Namespace(no_web=True), {}) is None
    with bind("127.0.0.1", 0) as taken:
        busy = taken.getsockname()[1]
        args = argparse.Namespace(no_web=False, web_host="127.0.0.1", web_port=busy)
        web = _start_web(args, child_env(redis_url, {"ACTIONSTREAM_DATA_DIR": str(tmp_path)}))
        try:
            printed = capsys.readouterr().out
            match = re.search(r"^web page: (http://127\.0\.0\.1:(\d+)/)$", printed, re.M)
            assert match and int(match.group(2)) != busy, printed
            url = match.group(1)
            assert wait_until(lambda: get(url + "api/health", timeout=5)[0] == 200
                              if _listening(int(match.group(2))) else False, 60)
            (child,) = web.children
        finally:
            web.stop()
    assert child.proc.returncode == 0  # stopped as on SIGTERM
    assert not _listening(int(match.group(2)))


def _listening(port: int) -> bool:
    return free_port("127.0.0.1", port) != port


@pytest.mark.parametrize("host, port, url", [("127.0.0.1", 8080, "http://127.0.0.1:8080/"),
                                             ("0.0.0.0", 80, "http://127.0.0.1:80/"),
                                             ("::1", 9000, "http://[::1]:9000/")])
def test_page_url(host, port, url):
    assert page_url(host, port) == url
