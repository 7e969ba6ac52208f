"""``actionstream web``: bind the port (a busy port is a one-line error) and serve the app
with uvicorn until SIGTERM or Ctrl-C. As it stops, the live streams (server-sent events) end
on their own, so an open page is no reason for a traceback; any other open connection gets
``GRACEFUL_S`` to finish.

``up`` binds the page's socket itself and hands it down (``--fd``), so the URL it prints is
the page's from the first moment, and two runs can never race for one port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from typing import Optional

from shared.settings import Settings
from workers.supervisor import ProcSpec, Supervisor

log = logging.getLogger(__name__)

GRACEFUL_S = 3


class WebError(ValueError):
    """The page cannot be served as asked (a port in use, an address not on this host)."""


def bind(host: str, port: int, flags: tuple[str, str] = ("--port", "--host")) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: any free port); WebError saying what to do
    (``flags``: the command's options for the port and the address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise WebError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass {flags[0]} N "
                       f"(another port) or {flags[1]} ADDRESS (one of this host's)") from None
    except OverflowError:
        sock.close()
        raise WebError(f"{flags[0]} {port} is not a port: give 1-65535 (0: any free port)") from None
    sock.listen(128)
    return sock


def bind_preferred(host: str, preferred: int, flags: tuple[str, str] = ("--port", "--host")) -> socket.socket:
    """A listening socket on ``preferred`` when it is free on ``host``, else on a port the
    system picks; WebError when neither can be bound (an address not on this host), or
    ``preferred`` is no port."""
    if not 0 <= preferred <= 65535:
        raise WebError(f"{flags[0]} {preferred} is not a port: give 1-65535 (0: any free port)")
    try:
        return bind(host, preferred, flags)
    except WebError as taken:
        try:
            return bind(host, 0, flags)
        except WebError:
            raise taken from None  # no port at all: the address is not this host's


def free_port(host: str, preferred: int) -> int:
    """``preferred`` when it can be bound on ``host`` now, else a free port the system picks."""
    with bind_preferred(host, preferred) as sock:
        return sock.getsockname()[1]


class WebSupervisor(Supervisor):
    """Runs ``actionstream web`` on the listening socket ``sock`` (handed down as ``--fd``);
    the socket is closed here once the process is stopped."""

    def __init__(self, sock: socket.socket, env: dict[str, str]) -> None:
        super().__init__([ProcSpec("web", ["web", "--fd", str(sock.fileno())], restart=False)], env)
        self.sock = sock
        self.extra_fds = (sock.fileno(),)

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        self.sock.close()


def page_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/"


def _server(config, stopping: Optional[asyncio.Event] = None):
    """A uvicorn server that stops on SIGTERM or SIGINT and then returns (uvicorn's own
    raises the signal again once stopped, which would end the process by the signal); as it
    begins to stop it sets ``stopping`` (the app's: its live streams end then)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            if stopping is not None:
                stopping.set()
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            old = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

    return Server(config)


def run_web(settings: Settings, host: str = "127.0.0.1", port: int = 8080,
            fd: Optional[int] = None) -> int:
    """Serve the page until SIGTERM or Ctrl-C (on the listening socket ``fd`` when given,
    else on ``host:port``); 0 once stopped."""
    import uvicorn

    from workers.web.app import create_app

    sock = socket.socket(fileno=fd) if fd is not None else bind(host, port)
    host, port = sock.getsockname()[:2]
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=GRACEFUL_S, log_config=None)
    server = _server(config, app.state.stopping)
    log.info("web: the page is at %s", page_url(host, port))
    server.run(sockets=[sock])
    log.info("web: stopped")
    return 0
