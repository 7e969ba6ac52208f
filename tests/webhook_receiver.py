"""A real webhook receiver for tests: an HTTP server on a free loopback port that answers
each POST with ``respond(path, headers, body) -> status`` (or ``(status, {header: value})``)
and records it; a GET (what a client following a redirect sends) is answered 200 and kept
in ``gets``."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def planned(plan: dict[str, list[int]]) -> Callable:
    """A ``respond`` that answers, per path, with the status codes of ``plan`` in turn (the
    last one repeats; 404 for a path not in it)."""
    lock = threading.Lock()

    def respond(path, headers, body) -> int:
        with lock:
            codes = plan.get(path, [404])
            return codes.pop(0) if len(codes) > 1 else codes[0]
    return respond


class WebhookReceiver:
    """``calls``: (path, status, headers, body) per POST, in order (headers case-insensitive)."""

    def __init__(self, respond: Callable) -> None:
        self.calls: list[tuple] = []
        self.gets: list[str] = []
        self.lock = threading.Lock()
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                code = respond(self.path, self.headers, body)
                code, extra = code if isinstance(code, tuple) else (code, {})
                with me.lock:
                    me.calls.append((self.path, code, self.headers, body))
                self.send_response(code)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()

            def do_GET(self):
                with me.lock:
                    me.gets.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def bodies(self, path: str, code: int) -> list[dict]:
        """The JSON bodies POSTed to ``path`` that were answered with ``code``."""
        with self.lock:
            return [json.loads(b) for p, c, _, b in self.calls if p == path and c == code]

    def wait(self, path: str, n: int, code: int, timeout: float = 60.0) -> list[dict]:
        """:meth:`bodies` once there are ``n`` of them (or ``timeout``: a hang guard)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.bodies(path, code)) < n:
            time.sleep(0.05)
        return self.bodies(path, code)

    def close(self) -> None:
        self.server.shutdown()
