"""``actionstream web``: bind the port (a busy port is a one-line error) and serve the app
with uvicorn until SIGTERM or Ctrl-C. As it stops, the live streams (server-sent events) end
on their own, so an open page is no reason for a traceback; any other open connection gets
``GRACEFUL_S`` to finish.

``up`` binds the page's socket itself and hands it down (``--fd``), so the URL it prints is
the page's from the first moment, and two runs can never race for one port.

Users log in (:mod:`workers.web.auth`, users in the event history). ``--no-auth`` serves the
page to anyone who reaches it, and is refused on any address but loopback; ``up`` passes it
when its page is on loopback, so a laptop needs no login. On the first start with a login,
with no user yet, an ``admin`` is made: its password from ``ACTIONSTREAM_WEB_ADMIN_PASSWORD``
(or ``..._FILE``), else a random one, printed once. ``--tls-cert``/``--tls-key`` (or the
settings) serve HTTPS, and the session cookie is then ``Secure``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Optional

from shared.errors import UserError
from shared.settings import Settings
from shared.supervisor import ProcSpec, Supervisor

log = logging.getLogger(__name__)

GRACEFUL_S = 3


class WebError(UserError, ValueError):
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
        argv = ["web", "--fd", str(sock.fileno())]
        if is_loopback(sock.getsockname()[0]):
            argv.append("--no-auth")  # a laptop's page: only this machine reaches it
        super().__init__([ProcSpec("web", argv, restart=False)], env)
        self.sock = sock
        self.extra_fds = (sock.fileno(),)

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        self.sock.close()


def page_url(host: str, port: int, tls: bool = False) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def tls_files(settings: Settings) -> Optional[tuple[Path, Path]]:
    """(certificate, key) to serve HTTPS with, both readable, or None; WebError otherwise."""
    cert, key = settings.web_tls_cert, settings.web_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise WebError("HTTPS needs both --tls-cert and --tls-key (ACTIONSTREAM_WEB_TLS_CERT, "
                       "ACTIONSTREAM_WEB_TLS_KEY)")
    for what, path in (("certificate", cert), ("key", key)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise WebError(f"TLS {what} {path}: {exc.strerror or exc}") from None
    return Path(cert), Path(key)


def make_auth(settings: Settings, host: str, no_auth: bool, tls: bool):
    """The page's users (:class:`workers.web.auth.Auth`), or None for ``--no-auth`` on
    loopback; WebError for ``--no-auth`` on any other address."""
    if no_auth:
        if not is_loopback(host):
            raise WebError(f"--no-auth serves the page to anyone who reaches it: only on loopback, not on "
                           f"{host}; drop --no-auth (users log in) or pass --host 127.0.0.1")
        log.warning("web: no login (--no-auth): anyone on this machine may see the page")
        return None
    from workers.history.users import UserStore
    from workers.web.auth import Auth

    users = UserStore.from_settings(settings)
    first_admin(users, settings)
    return Auth(users, secure=tls or settings.web_secure_cookie, attempts=settings.web_login_attempts,
                session_ttl_s=settings.web_session_hours * 3600)


def first_admin(users, settings: Settings) -> None:
    """With no user yet: an ``admin`` with the password of the settings, else a random one,
    printed once (in the log)."""
    from workers.history.users import new_password

    if users.count():
        return
    given = settings.web_admin_password.get_secret_value() if settings.web_admin_password else None
    if given is None and settings.web_admin_password_file is not None:
        try:
            given = Path(settings.web_admin_password_file).read_text().strip()
        except OSError as exc:
            raise WebError(f"ACTIONSTREAM_WEB_ADMIN_PASSWORD_FILE {settings.web_admin_password_file}: "
                           f"{exc.strerror or exc}") from None
    password = given or new_password()
    try:
        users.add("admin", "admin", password)
    except ValueError as exc:  # another web process made it a moment ago, or too short a password
        if users.count():
            return
        raise WebError(f"the first admin's password: {exc}") from None
    if given:
        log.warning("web: first start: user admin made with the password of the settings")
    else:
        log.warning("web: first start: log in as admin with password %s (shown once; change it: "
                    "actionstream users passwd admin)", password)


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
            fd: Optional[int] = None, no_auth: bool = False) -> int:
    """Serve the page until SIGTERM or Ctrl-C (on the listening socket ``fd`` when given,
    else on ``host:port``); 0 once stopped. ``no_auth``: no login (loopback only)."""
    import uvicorn

    from workers.web.app import create_app

    tls = tls_files(settings)
    if no_auth and fd is None and not is_loopback(host):
        make_auth(settings, host, no_auth, tls is not None)  # refused before binding anything
    sock = socket.socket(fileno=fd) if fd is not None else bind(host, port)
    host, port = sock.getsockname()[:2]
    try:
        auth = make_auth(settings, host, no_auth, tls is not None)
    except BaseException:
        sock.close()
        raise
    app = create_app(settings, auth=auth)
    ssl = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=GRACEFUL_S, log_config=None, **ssl)
    server = _server(config, app.state.stopping)
    log.info("web: the page is at %s", page_url(host, port, tls is not None))
    server.run(sockets=[sock])
    log.info("web: stopped")
    return 0
