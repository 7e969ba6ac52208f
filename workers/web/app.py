"""The FastAPI application: the page, its static files, and the JSON and live endpoints.

``GET /`` the page; ``/static/*`` its script and style; ``/api/cameras``,
``/api/cameras/{camera}/view.jpg`` (the newest frame, drawn), ``/api/events`` (history and
stream), ``/api/events/live`` (server-sent events from the events stream, resumable with
``Last-Event-ID``), ``/api/health``, ``/api/replays`` (the replay jobs of the jobs registry);
``/snapshots/{id}.jpg``. With a login (:mod:`workers.web.auth`): ``/login`` (the form),
``/api/login``, ``/api/logout``, ``/api/me``, and for admins ``/api/users`` and
``/api/users/{name}/token``; every route but the form, the login and health needs a session
or a bearer token (health tells a stranger only whether all is well).

A view carries what is drawn on it in its ``X-View`` header (JSON: frame seq, people, each
track's label, score and caption), so the page shows beside a picture the labels of that very
picture. ``app.state.stopping`` (an :class:`asyncio.Event`) is set when the server begins to
stop: the live streams then end at once, and the server stops without cancelling them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import AsyncIterator, Awaitable, Optional

import redis
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from shared import codec, keys
from shared.codec import DecodeError
from shared.redisio import CONNECTION_ERRORS, connect, connect_async, redact, text
from shared.settings import Settings
from workers.web import auth as webauth
from workers.web.data import PageData

log = logging.getLogger(__name__)

STATIC = Path(str(resources.files("workers.web") / "static"))
LIVE_BLOCK_MS = 1000  # the live stream's wait per read; a comment keeps the connection alive
NO_STORE = {"Cache-Control": "no-store"}


def _since(since: Optional[str], after: Optional[float]) -> Optional[float]:
    """``since``: a duration back from now (``90s``, ``15m``, ``1h``, ``2d``); ``after``: epoch
    seconds. The later of the two, or None."""
    starts = [after] if after is not None else []
    if since:
        from workers.history.query import parse_duration
        from workers.history.store import HistoryError

        try:
            starts.append(time.time() - parse_duration(since))
        except HistoryError as exc:
            raise HTTPException(400, str(exc).replace("--since", "since")) from None
    return max(starts) if starts else None


def _camera(camera: str) -> str:
    try:
        return keys.check_camera_id(camera)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


async def _start_id(client, last_event_id: Optional[str]) -> str:
    """Where the live stream starts: after ``Last-Event-ID`` (a reconnecting page), else
    after the newest entry now (the page loaded the earlier ones from /api/events)."""
    if last_event_id and all(p.isdigit() for p in last_event_id.split("-", 1)):
        return last_event_id
    newest = await client.xrevrange(keys.EVENTS_STREAM, count=1)
    return text(newest[0][0]) if newest else "0-0"


async def _unless_stopping(stopping: asyncio.Event, work: Awaitable, stopped=None):
    """``work``'s result, or ``stopped`` as soon as the server begins to stop (``work`` is then
    cancelled)."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stop):
            t.cancel()
    return task.result() if task.done() and not task.cancelled() else stopped


async def _live_events(request: Request, url: str, data: PageData,
                       stopping: asyncio.Event) -> AsyncIterator[str]:
    """Server-sent events until the page goes away or the server stops (then the stream ends,
    and a page still open reconnects to the next server)."""
    client = connect_async(url)  # a cluster's client for redis+cluster://
    try:
        yield "retry: 2000\n\n"
        last = None
        while not stopping.is_set() and not await request.is_disconnected():
            try:
                if last is None:
                    last = await _start_id(client, request.headers.get("last-event-id"))
                    yield "event: ready\ndata: {}\n\n"  # the page loads what came before now
                resp = await _unless_stopping(stopping, client.xread({keys.EVENTS_STREAM: last}, count=100,
                                                                     block=LIVE_BLOCK_MS))
            except CONNECTION_ERRORS as exc:
                log.warning("web: live events: redis unreachable (%s); retrying", exc)
                yield ": redis unreachable\n\n"
                await _unless_stopping(stopping, asyncio.sleep(1.0))
                continue
            if stopping.is_set():
                break
            if not resp:
                yield ": keep-alive\n\n"
                continue
            for _, entries in resp:
                for entry_id, fields in entries:
                    last = text(entry_id)
                    try:
                        event = codec.decode_event(fields.get(b"event", b""))
                    except DecodeError as exc:
                        log.warning("web: event entry %s skipped: %s", last, exc)
                        continue
                    row = await run_in_threadpool(data.event_row, event)
                    yield f"id: {last}\nevent: event\ndata: {json.dumps(row, separators=(',', ':'))}\n\n"
    finally:
        with contextlib.suppress(*CONNECTION_ERRORS, RuntimeError):  # a connection cut mid-read
            await client.aclose()


def _auth_routes(app: FastAPI, auth: Optional[webauth.Auth]) -> None:
    """Login, logout, who is logged in, and the admins' user routes (``auth`` None: no login,
    the page is served to anyone who reaches it: loopback only, see workers.web.server)."""

    @app.get("/api/me")
    def me(request: Request):
        user = getattr(request.state, "user", None)
        return {"auth": auth is not None, "user": user.name if user else None,
                "role": user.role if user else "admin"}

    if auth is None:
        return

    @app.get("/login", include_in_schema=False)
    def login_form():
        return webauth.login_page()

    @app.post("/api/login")
    async def login(request: Request):
        return await webauth.login(request, auth)

    @app.post("/api/logout")
    async def logout(request: Request):
        return await webauth.logout(request, auth)

    @app.get("/api/users")
    def users():
        return {"users": auth.users.list()}

    @app.post("/api/users/{name}/token")
    def token(name: str, label: Optional[str] = None):
        return webauth.new_token(auth, name, label)


def create_app(settings: Settings, r: Optional[redis.Redis] = None, *,
               auth: Optional[webauth.Auth]) -> FastAPI:
    """The application for the Redis (and event history) that ``settings`` name; ``auth``: its
    users (None: no login, for a page on loopback only)."""
    url = settings.redis_target
    data = PageData(settings, r if r is not None else connect(url))

    @asynccontextmanager
    async def lifespan(_app):
        log.info("web: reading redis %s", redact(url))
        yield
        data.close()
        if auth is not None:
            auth.users.close()

    app = FastAPI(title="actionstream", lifespan=lifespan, docs_url=None, redoc_url=None)  # both load CDNs
    app.state.data = data
    app.state.stopping = stopping = asyncio.Event()  # set by workers.web.server as it stops
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if auth is not None:
        app.add_middleware(webauth.AuthMiddleware, auth=auth)
    _auth_routes(app, auth)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_request, exc):  # the page says so; the server goes on
        return JSONResponse({"error": f"redis unreachable: {exc}"}, status_code=503)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers=NO_STORE)

    @app.get("/api/cameras")
    def cameras():
        return {"cameras": data.cameras()}

    @app.get("/api/cameras/{camera}/view.jpg")
    def camera_view(camera: str):
        drawn = data.view(_camera(camera))
        if drawn is None:
            raise HTTPException(404, f"camera {camera} has no frame to show (none yet, or unreadable)")
        jpeg, meta = drawn
        return Response(jpeg, media_type="image/jpeg",
                        headers={**NO_STORE, "X-View": json.dumps(meta, separators=(",", ":"))})

    @app.get("/api/events")
    def events(since: Optional[str] = None, after: Optional[float] = None, camera: Optional[str] = None,
               label: Optional[str] = None, limit: int = Query(100, ge=1, le=1000)):
        start = _since(since, after)
        return {"events": data.events(start, _camera(camera) if camera else None, label, limit)}

    @app.get("/api/events/live")
    async def live(request: Request):
        return StreamingResponse(_live_events(request, url, data, stopping), media_type="text/event-stream",
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})

    @app.get("/api/health")
    def health(request: Request):
        summary = data.health()
        if auth is not None and getattr(request.state, "user", None) is None:
            return {"ok": summary.get("ok")}  # a stranger learns no camera, worker or host
        return summary

    @app.get("/api/replays")
    def replays():
        return {"jobs": data.replay_jobs()}

    @app.get("/snapshots/{event_id}.jpg")
    def snapshot(event_id: str):
        path = data.snapshot_path(event_id)
        if path is None:
            raise HTTPException(404, f"no snapshot for event {event_id[:80]}")
        return FileResponse(path, media_type="image/jpeg")

    return app
