"""Helpers of the web tests: a real clip through the real stages, events written as the
action worker writes them, the app served by uvicorn on a free port, plain HTTP."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Iterator, Optional

from shared import codec, keys
from shared.schemas import Event, Skeletons
from shared.settings import Settings, load_settings, make_camera
from tests.conftest import shared_path
from tests.procs import wait_until

CLIP = "fall-01-cam0.mp4"
CROP = (320, 0, 320, 240)  # the RGB half of a URFD frame
CAMERA = "urfd-fall-01"


def settings(url: str, **kw) -> Settings:
    kw.setdefault("mode", "replay")
    kw.setdefault("replay_max_lag", 10_000)
    return load_settings(redis_url=url, shared_dir=shared_path(), **kw)


def load_movenet():
    from shared.modelpaths import resolve_pose_model
    from workers.pose.adapters import load_pose_model

    s = load_settings(shared_dir=shared_path())
    return load_pose_model("movenet", resolve_pose_model("movenet", s), threads=2)


def publish(url: str, camera: str = CAMERA, frames: Optional[int] = None, **kw) -> None:
    from producer.producer import Producer

    video = str(shared_path("data", "urfd", CLIP))
    Producer(settings(url, **kw), make_camera(id=camera, source=video, crop=CROP)).run(max_frames=frames)


def run_pose(url: str, model, camera: str = CAMERA, **kw) -> None:
    from workers.pose.worker import PoseWorker

    assert PoseWorker(settings(url, **kw), model, "movenet", cameras=[camera]).run(exit_on_eos=True) == 0


def run_action(url: str, camera: str = CAMERA) -> None:
    from shared.modelpaths import resolve_action_model
    from workers.action.classifier import ActionClassifier
    from workers.action.worker import ActionWorker, rules_from_settings
    from workers.inference.sessions import default_action_model

    s = settings(url)
    classifier = ActionClassifier(resolve_action_model(s, default_action_model()), threads=2)
    worker = ActionWorker(s, classifier, rules_from_settings(s, classifier.card.labels), [camera])
    assert worker.run(exit_on_eos=True) == 0


def write_event(r, event: Event) -> bool:
    """Write ``event`` to the events stream and channel with the action worker's own script."""
    from workers.action.worker import _WRITE_EVENT, EVENT_GUARD_TTL_S

    raw = codec.encode_event(event)
    return bool(r.register_script(_WRITE_EVENT)(
        keys=[keys.event_guard_key(event.id), keys.EVENTS_STREAM],
        args=[EVENT_GUARD_TTL_S, raw, keys.EVENTS_CHANNEL, 100_000]))


def falling(frame_end: int, camera: str = CAMERA, track: int = 1, emitted: float = 1.0e9) -> Event:
    return Event(camera, track, "falling", 1, 0.93, max(0, frame_end - 47), frame_end,
                 emitted - 2.0, emitted - 0.5, "fall", emitted)


@contextmanager
def serving(s: Settings, auth=None) -> Iterator[str]:
    """The app for ``s`` served by uvicorn on a free port (in a thread); its base URL.
    ``auth``: its users (:class:`workers.web.auth.Auth`; None: no login, as on loopback)."""
    from workers.web.app import create_app

    with serve_app(create_app(s, auth=auth)) as base:
        yield base


@contextmanager
def serve_app(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port (in a thread); its base URL."""
    import uvicorn

    from workers.web.server import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=1, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started or not thread.is_alive(), 30) and server.started
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def get(url: str, headers: Optional[dict] = None, timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET, errors included."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str) -> tuple[int, dict]:
    status, _, body = get(url)
    return status, json.loads(body)


@contextmanager
def process(args: list[str], env: dict[str, str], ready: Optional[str] = None) -> Iterator[tuple]:
    """``actionstream ARGS`` as a process; (process, its stderr lines so far, the first match of
    ``ready`` in them: waited for up to 120 s). SIGTERM (then SIGKILL) at the end."""
    import re
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-m", "workers", *args], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        match = None
        if ready is not None:
            pattern = re.compile(ready)
            match = wait_until(lambda: next((m for m in map(pattern.search, list(lines)) if m), None)
                               or proc.poll() is not None, 120)
            assert match is not None and match is not True, "".join(lines)[-3000:]
        yield proc, lines, match
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(10)


def web_env(redis_url: str, tmp_path, **extra: str) -> dict[str, str]:
    """The environment of a web (or history) process: this one's, without ACTIONSTREAM_*
    settings, on ``redis_url``, with the event history in ``tmp_path``."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    env.update(ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_DATA_DIR=str(tmp_path),
               ACTIONSTREAM_HISTORY_URL=f"sqlite:///{tmp_path / 'history.db'}",
               ACTIONSTREAM_SNAPSHOTS_DIR=str(tmp_path / "snapshots"),
               ACTIONSTREAM_SHARED_DIR=str(shared_path()), **extra)
    return env


def posed_frame(r, seq: int, value: int, camera: str = CAMERA, track: int = 1,
                fps: float = 30.0) -> Skeletons:
    """A posed frame as the pose worker keeps it for the page (recent-frames stream): a
    160x120 picture of one grey ``value`` with one tracked person drawn in its middle; the
    camera registered (``fps``). Its skeletons."""
    import cv2
    import numpy as np

    from shared.skeleton import Person

    kp = np.zeros((18, 3), np.float32)
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(60, 100, 18), np.linspace(30, 90, 18), 0.9
    person = Person(kp, [55, 25, 105, 95], 0.9, track)
    skel = Skeletons(camera, seq, 1.0e9 + seq / fps, 160, 120, (person,), "test")
    ok, jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), value, np.uint8))
    r.hset(keys.CAMERAS_KEY, camera, json.dumps({"source": "test", "mode": "live", "fps": fps}))
    r.xadd(keys.recent_frames_stream(camera), {**codec.encode_skeletons(skel), "jpeg": jpeg.tobytes()})
    return skel


def score(r, label: str, value: float, frame_end: int, camera: str = CAMERA, track: int = 1) -> None:
    """A classified window as the action worker writes it (scores stream)."""
    r.xadd(keys.scores_stream(camera), {"track_id": track, "frame_start": max(0, frame_end - 31),
                                        "frame_end": frame_end, "label": label, "score": f"{value:.4f}"})
