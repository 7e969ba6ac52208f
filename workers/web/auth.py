"""Login for the page and its API: sessions, bearer tokens, roles, a rate-limited login.

Every request passes :class:`AuthMiddleware` before it reaches a route. It is closed by
default: a path is public only when :data:`PUBLIC` names it (the login form, the login
itself, health); a viewer may reach only what :data:`VIEWER` matches (the page, its static
files, cameras, events, snapshots, its own session); everything else needs an admin. So a
route added later without a thought for who may use it is an admin's only.

A browser holds a session: a random id (stored hashed in the event-history database,
:mod:`workers.history.users`) in a signed cookie (HttpOnly, SameSite=Lax, Secure under
TLS); logging out deletes the session, and a new password ends all of the user's sessions.
A script sends ``Authorization: Bearer <token>`` (``actionstream users token NAME``).

Logins are limited per client address (:class:`LoginLimiter`): after ``attempts`` failed
ones within a minute the next is refused (429) without looking at the password.
"""

from __future__ import annotations

import collections
import logging
import re
import time
from typing import Callable, Optional
from urllib.parse import parse_qs

from itsdangerous import BadSignature, TimestampSigner
from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from workers.history.users import SESSION_TTL_S, User, UserError, UserStore

log = logging.getLogger(__name__)

COOKIE = "actionstream_session"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="actionstream"'}
LOGIN_WINDOW_S = 60.0
PUBLIC = frozenset({"/login", "/api/login", "/api/health"})
VIEWER = re.compile(r"/|/static/[^?]+|/api/cameras|/api/cameras/[^/]+/view\.jpg|/api/events|"
                    r"/api/events/live|/snapshots/[^/]+\.jpg|/api/me|/api/logout")
LOGINS = Counter("actionstream_web_logins_total", "Logins to the web page by outcome: ok, wrong (user "
                 "or password), limited (refused unchecked: too many failures from the address)",
                 ["outcome"])


def needs(path: str) -> str:
    """Who may reach ``path``: ``public``, ``viewer`` (and admin) or ``admin``."""
    if path in PUBLIC:
        return "public"
    return "viewer" if VIEWER.fullmatch(path) else "admin"


class LoginLimiter:
    """Failed logins per client address within ``window_s``; at ``attempts`` the address is
    refused until the oldest failure is older than the window. Bounded to ``max_addresses``
    (the quietest are forgotten first)."""

    def __init__(self, attempts: int, window_s: float = LOGIN_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, max_addresses: int = 10000) -> None:
        self.attempts, self.window_s, self.clock = attempts, window_s, clock
        self.max_addresses = max_addresses
        self._failed: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()

    def _recent(self, addr: str) -> collections.deque:
        times = self._failed.get(addr)
        if times is None:
            return collections.deque()
        while times and times[0] <= self.clock() - self.window_s:
            times.popleft()
        return times

    def retry_after(self, addr: str) -> float:
        """Seconds until ``addr`` may try again; 0 when it may now."""
        times = self._recent(addr)
        if len(times) < self.attempts:
            return 0.0
        return max(0.1, times[0] + self.window_s - self.clock())

    def left(self, addr: str) -> int:
        return max(0, self.attempts - len(self._recent(addr)))

    def failed(self, addr: str) -> None:
        times = self._failed.pop(addr, None) or collections.deque()
        times.append(self.clock())
        self._failed[addr] = times
        while len(self._failed) > self.max_addresses:
            self._failed.popitem(last=False)

    def succeeded(self, addr: str) -> None:
        self._failed.pop(addr, None)


class Auth:
    """The users of ``users`` and how a request proves it is one of them."""

    def __init__(self, users: UserStore, secure: bool = False, attempts: int = 5,
                 session_ttl_s: float = SESSION_TTL_S) -> None:
        self.users = users
        self.secure = secure
        self.session_ttl_s = session_ttl_s
        self.limiter = LoginLimiter(attempts)
        self.signer = TimestampSigner(users.signing_key(), salt="actionstream-session")

    def cookie_for(self, session: str) -> str:
        return self.signer.sign(session).decode()

    def session_of(self, cookie: Optional[str]) -> Optional[str]:
        """The session id in a cookie signed here and not older than a session lives."""
        if not cookie:
            return None
        try:
            return self.signer.unsign(cookie, max_age=int(self.session_ttl_s)).decode()
        except (BadSignature, UnicodeDecodeError):
            return None

    def credential(self, request: Request) -> Optional[str]:
        """The bearer token or the session id the request carries."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return self.session_of(request.cookies.get(COOKIE))

    async def user_of(self, request: Request) -> Optional[User]:
        secret = self.credential(request)
        return await run_in_threadpool(self.users.resolve, secret) if secret else None

    def set_cookie(self, response: Response, session: str) -> None:
        response.set_cookie(COOKIE, self.cookie_for(session), max_age=int(self.session_ttl_s), path="/",
                            httponly=True, samesite="lax", secure=self.secure)


class AuthMiddleware:
    """ASGI: refuses a request that may not reach its path (401 without credentials; a stranger
    asking for the page is sent to the login form; 403 for a viewer where an admin is needed);
    puts the user in ``request.state.user``."""

    def __init__(self, app, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        need = needs(scope["path"])
        user = await self.auth.user_of(request)
        scope.setdefault("state", {})["user"] = user
        if need == "public" or (user is not None and (need == "viewer" or user.admin)):
            await self.app(scope, receive, send)
            return
        if user is None and scope["path"] == "/" and scope["type"] == "http":
            refusal: Response = RedirectResponse("/login", status_code=303)
        elif user is None:
            refusal = JSONResponse({"error": "log in first (a session, or Authorization: Bearer TOKEN)"},
                                   status_code=401, headers=CHALLENGE)
        else:
            refusal = JSONResponse(
                {"error": f"user {user.name} ({user.role}) may not use this; an admin may"}, status_code=403)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401 if user is None else 4403})
            return
        await refusal(scope, receive, send)


async def login_fields(request: Request) -> tuple[str, str, bool]:
    """(user, password, from a form) of a login request: JSON or a form post."""
    body = (await request.body())[:8192]
    if request.headers.get("content-type", "").startswith("application/json"):
        import json

        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        return str(data.get("user") or ""), str(data.get("password") or ""), False
    form = parse_qs(body.decode("utf-8", "replace"))
    return (form.get("user") or [""])[0], (form.get("password") or [""])[0], True


async def login(request: Request, auth: Auth) -> Response:
    """POST /api/login: a session (its cookie) for the right user and password."""
    addr = request.client.host if request.client else "?"
    name, password, form = await login_fields(request)
    wait = auth.limiter.retry_after(addr)
    if wait:
        LOGINS.labels("limited").inc()
        log.warning("web: login of %r from %s refused unchecked: too many failures", name[:64], addr)
        message = f"too many failed logins from {addr}; try again in {int(wait) + 1} s"
        headers = {"Retry-After": str(int(wait) + 1)}
        return (login_page(message, 429, headers) if form
                else JSONResponse({"error": message}, status_code=429, headers=headers))
    user = await run_in_threadpool(auth.users.verify, name, password) if name and password else None
    if user is None:
        auth.limiter.failed(addr)
        LOGINS.labels("wrong").inc()
        log.warning("web: failed login of %r from %s", name[:64], addr)
        message = f"wrong user or password ({auth.limiter.left(addr)} tries left this minute)"
        return login_page(message, 401) if form else JSONResponse({"error": message}, status_code=401)
    auth.limiter.succeeded(addr)
    LOGINS.labels("ok").inc()
    log.info("web: %s logged in from %s", user.name, addr)
    session = await run_in_threadpool(auth.users.new_session, user.name, auth.session_ttl_s)
    response: Response = (RedirectResponse("/", status_code=303) if form
                          else JSONResponse({"user": user.name, "role": user.role}))
    auth.set_cookie(response, session)
    return response


async def logout(request: Request, auth: Auth) -> Response:
    """POST /api/logout: the session ends here and in the browser."""
    session = auth.session_of(request.cookies.get(COOKIE))
    if session:
        await run_in_threadpool(auth.users.end, session)
    json_wanted = request.headers.get("content-type", "").startswith("application/json")
    response: Response = JSONResponse({"ok": True}) if json_wanted else RedirectResponse("/login", 303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=auth.secure)
    return response


def new_token(auth: Auth, name: str, label: Optional[str]) -> JSONResponse:
    try:
        return JSONResponse({"user": name, "token": auth.users.new_token(name, label)})
    except UserError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)


LOGIN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>actionstream: log in</title><link rel="icon" href="data:,">
<style>
body { margin: 0; min-height: 100vh; display: flex; align-items: center; justify-content: center;
  background: #111418; color: #e4e8ee; font: 14px/1.4 system-ui, sans-serif; }
form { background: #1a1f26; border: 1px solid #2a313b; border-radius: 8px; padding: 22px; width: 300px; }
h1 { font-size: 18px; margin: 0 0 14px; } label { display: block; margin: 10px 0 4px; color: #8a94a3; }
input { width: 100%; box-sizing: border-box; padding: 7px; background: #0b0d10; color: inherit;
  border: 1px solid #2a313b; border-radius: 4px; }
button { margin-top: 16px; width: 100%; padding: 8px; background: #58a6ff; border: 0; border-radius: 4px;
  color: #0b0d10; font-weight: 600; cursor: pointer; }
#error { color: #f85149; margin: 0 0 8px; }
</style></head><body>
<form method="post" action="/api/login" id="login">
<h1>actionstream</h1>
__ERROR__
<label for="user">user</label><input id="user" name="user" autocomplete="username" required autofocus>
<label for="password">password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">log in</button>
</form></body></html>
"""


def login_page(error: str = "", status: int = 200, headers: Optional[dict] = None) -> HTMLResponse:
    import html

    shown = f'<p id="error" role="alert">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(LOGIN_HTML.replace("__ERROR__", shown), status_code=status,
                        headers={"Cache-Control": "no-store", **(headers or {})})
