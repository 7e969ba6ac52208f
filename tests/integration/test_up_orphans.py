"""When `up` (or a test run) dies, everything it started dies with it: SIGKILL included."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from shared import keys
from tests.conftest import ROOT, shared_path
from tests.procs import MARKER_VAR, family, new_marker, wait_gone, wait_pids_gone, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="finds processes through /proc")]


def _env(tmp: Path, marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    env.update({MARKER_VAR: marker, "TMPDIR": str(tmp), "ACTIONSTREAM_SHARED_DIR": str(shared_path())})
    return env


def _up_args(video: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "workers", "up", "--no-progress", "--source", str(video),
            "--camera", "urfd-01", "--crop", "320,0,320,240", "--skeletons-out", str(out)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_up_leaves_nothing_running_and_the_next_up_works(tmp_path, sig):
    video = shared_path("data", "urfd", "fall-01-cam0.mp4")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    marker = new_marker()
    up = subprocess.Popen(_up_args(video, tmp_path / "first"), cwd=ROOT, env=_env(tmp, marker),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(up.stderr), daemon=True)
    reader.start()
    try:
        url = wait_until(lambda: next((m.group(1) for m in map(re.compile(r"redis (redis://\S+),").search,
                                                                list(lines)) if m), None), 120)
        assert url, "".join(lines)[-3000:]
        client = redis.Redis.from_url(url)
        # mid-run: the pose stage has written skeletons and the run is not over
        some = wait_until(lambda: client.xlen(keys.skeletons_stream("urfd-01")) > 0, 180)
        assert some, "".join(lines)[-3000:]
        assert up.poll() is None
        started = family(marker) - {up.pid}
        assert len(started) >= 5, started  # redis guard + server, producer, pose, action
        up.send_signal(sig)
        code = up.wait(30)
    finally:
        if up.poll() is None:
            up.kill()
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    assert wait_pids_gone(started, 10.0) == []
    assert wait_gone(marker, 10.0) == []
    reader.join(10)  # the children wrote to up's stderr: their last lines are there
    log = "".join(lines)
    for stage in ("pose-worker", "action-worker"):  # each stopped as on SIGTERM, leases released
        assert re.search(rf"\[{stage}\] .*stopped after \d+ entries", log), log[-3000:]
    assert "could not release leases" not in log, log[-3000:]
    assert wait_until(lambda: not list(tmp.glob("actionstream-redis-*")), 10.0), list(tmp.iterdir())
    if sig != signal.SIGKILL:
        return

    out = tmp_path / "second"
    second = subprocess.run(_up_args(video, out), cwd=ROOT, env=_env(tmp, new_marker()),
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    import cv2

    cap = cv2.VideoCapture(str(video))
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    doc = json.loads((out / "urfd-01.json").read_text())
    assert [d["frame_index"] for d in doc["data"]] == list(range(n_frames))


def test_a_killed_owner_takes_its_redis_server_and_data_dir_along(tmp_path):
    marker = new_marker()
    code = ("from shared.redis_server import RedisServer\n"
            "s = RedisServer().start()\nprint(s.url, s.data_dir, flush=True)\n"
            "import time\ntime.sleep(600)\n")
    owner = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=_env(tmp_path, marker),
                             stdout=subprocess.PIPE, text=True)
    try:
        url, data_dir = owner.stdout.readline().split()
        assert redis.Redis.from_url(url).ping()
        started = family(marker) - {owner.pid}
        assert len(started) == 2, started  # the guard and the server
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
    finally:
        if owner.poll() is None:
            owner.kill()
    assert wait_pids_gone(started, 10.0) == []
    assert wait_until(lambda: not Path(data_dir).exists(), 10.0)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url).ping()
