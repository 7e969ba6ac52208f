"""How `actionstream up` ends when the run does not go to its end: a child that fails for
good, Ctrl-C (what was produced is kept), and SIGINT to the process group of an `up` that
was started with SIGINT ignored (a background job of a script). Real processes, a real Redis."""

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

from shared import codec, keys
from tests.conftest import ROOT, shared_path
from tests.procs import MARKER_VAR, family, new_marker, wait_gone, wait_pids_gone, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="finds processes through /proc")]

CAMERA = "urfd-03"


def _env(tmp: Path, marker: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    env.update({MARKER_VAR: marker, "TMPDIR": str(tmp), "ACTIONSTREAM_SHARED_DIR": str(shared_path()),
                "ACTIONSTREAM_DATA_DIR": str(tmp / "data")}, **extra)
    return env


def _up_argv(*args: str) -> list[str]:
    video = shared_path("data", "urfd", "fall-03-cam0.mp4")  # 215 frames: time to stop it mid-run
    return [sys.executable, "-m", "workers", "up", "--no-progress", "--no-web", "--source", str(video),
            "--camera", CAMERA, "--crop", "320,0,320,240", *args]


class Up:
    """`up` running in the background, its stderr collected as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str], **popen) -> None:
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, **popen)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def log(self) -> str:
        return "".join(self.lines)[-4000:]

    def redis(self) -> redis.Redis:
        pattern = re.compile(r"redis (redis://\S+),")
        url = wait_until(lambda: next((m.group(1) for m in map(pattern.search, list(self.lines)) if m), None),
                         120)
        assert url, self.log()
        return redis.Redis.from_url(url)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        return code


def test_a_child_that_fails_for_good_ends_up_with_its_reason(tmp_path):
    """The pose model found is no model (up only finds it; the pose worker loads it): the
    worker exits 2 and `up` ends at once with its reason, exit 2, nothing left running."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "movenet_multipose.onnx").write_text("not a model\n")
    marker = new_marker()
    up = Up(_up_argv(), _env(tmp_path, marker, ACTIONSTREAM_MODELS_DIR=str(models)))
    code = up.wait(180)
    log = up.log()
    assert code == 2, log
    last = log.strip().splitlines()[-1]
    assert last.startswith("actionstream up: error: pose-worker exited with 2: model file "), last
    assert "movenet_multipose.onnx cannot be loaded" in last, last
    assert "Traceback" not in log, log
    assert wait_gone(marker) == []
    assert not list(tmp_path.glob("actionstream-redis-*")), list(tmp_path.iterdir())


def test_ctrl_c_writes_what_was_produced_before_the_stop(tmp_path, seeded_action_model):
    """SIGINT to `up` once an event of the run is in Redis: exit 130, nothing left running,
    and --events-out and --skeletons-out hold what went through the pipeline until then."""
    marker = new_marker()
    ev, sk = tmp_path / "ev.jsonl", tmp_path / "sk"
    env = _env(tmp_path, marker, ACTIONSTREAM_ALERT_LABELS='["falling", "lying", "upright"]',
               ACTIONSTREAM_ALERT_THRESHOLD="0", ACTIONSTREAM_ALERT_CONSECUTIVE="1")
    up = Up(_up_argv("--action-model", str(seeded_action_model), "--events-out", str(ev),
                     "--skeletons-out", str(sk)), env)
    try:
        client = up.redis()
        first = wait_until(lambda: client.xrange(keys.EVENTS_STREAM, count=1), 300)
        assert first, up.log()
        seen = codec.decode_event(first[0][1][b"event"]).id
        assert up.proc.poll() is None, "the clip ended before the stop"
        started = family(marker) - {up.proc.pid}
        up.proc.send_signal(signal.SIGINT)
    finally:
        code = up.wait(60)
    assert code == 130, up.log()
    assert wait_pids_gone(started, 10.0) == []
    assert wait_gone(marker, 10.0) == []
    events = [codec.decode_event(line) for line in ev.read_text().splitlines()]
    assert seen in {e.id for e in events}, up.log()
    doc = json.loads((sk / f"{CAMERA}.json").read_text())
    frames = [d["frame_index"] for d in doc["data"]]
    assert frames and frames == list(range(len(frames))), frames[:5]
    assert len(frames) < 215  # stopped mid-run
    assert max(e.frame_end for e in events) <= frames[-1]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_to_the_group_of_an_up_started_with_sigint_ignored(tmp_path):
    """`bash -c 'actionstream up ... &'`: the job starts with SIGINT ignored. SIGINT to its
    process group still stops `up` and everything it started."""
    marker = new_marker()
    up = Up(_up_argv(), _env(tmp_path, marker), preexec_fn=_ignore_sigint, start_new_session=True)
    try:
        client = up.redis()
        assert wait_until(lambda: client.xlen(keys.skeletons_stream(CAMERA)) > 0, 300), up.log()
        assert up.proc.poll() is None
        os.killpg(up.proc.pid, signal.SIGINT)
    finally:
        code = up.wait(60)
    assert code == 130, up.log()
    assert wait_gone(marker, 10.0) == []
    assert not list(tmp_path.glob("actionstream-redis-*")), list(tmp_path.iterdir())
