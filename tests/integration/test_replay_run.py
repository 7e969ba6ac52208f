"""Replays through the command line with real processes, where they end and what they say.

* ``actionstream replay run --archive DIR``: the archive an ``up --archive DIR`` left, once
  ``up`` and its Redis have ended, replayed with nothing else running (its own Redis and
  workers, all gone afterwards): the live run's event, frames and skeletons;
* bad input echoes the times as typed (ISO, not epoch seconds) and the directory looked in;
* a ``replay submit`` whose jobs worker reads another archive directory FAILS with that
  directory (``--follow`` exits 1), it does not end DONE with 0 items;
* ``replay status --follow`` on a job already under way shows a true rate, not the items
  done before it started divided by a microsecond.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from shared import keys
from tests.conftest import ROOT, shared_path
from tests.integration.test_replay_jobs import NO_PIPELINE, Procs, published, state
from tests.integration.test_up import _up
from tests.procs import MARKER_VAR, family, new_marker, wait_pids_gone, wait_until
from workers.archive.reader import ArchiveReader
from workers.archive.storage import LocalStorage
from workers.jobs import registry

pytestmark = pytest.mark.integration

CAMERA = "urfd-16"
FRAMES = 55  # fall-16, the shortest UR Fall clip
# it ends 0.3 s after its fall, too soon for the default 3 windows in a row: 2 here, so that a
# replay with --consecutive 1 can raise it a window earlier
SHORT_CLIP_RULE = {"ACTIONSTREAM_ALERT_CONSECUTIVE": "2"}


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    """``up --archive DIR`` on a fall clip, ended: (the archive directory, the run's events)."""
    tmp = tmp_path_factory.mktemp("up-archive")
    archive, ev = tmp / "archive", tmp / "ev.jsonl"
    env = {"ACTIONSTREAM_SHARED_DIR": str(shared_path()), "ACTIONSTREAM_DATA_DIR": str(tmp / "data"),
           **SHORT_CLIP_RULE}
    proc = _up("--source", str(shared_path("data", "urfd", "fall-16-cam0.mp4")), "--camera", CAMERA,
               "--crop", "320,0,320,240", "--no-web", "--no-history", "--events-out", str(ev),
               "--archive", str(archive), env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in ev.read_text().splitlines()]
    assert any(e["label"] == "falling" for e in events), events
    return archive, events


def _replay_run(tmp, *args, marker=None, timeout=180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ACTIONSTREAM_REDIS_URL"}  # no Redis runs
    env.update(ACTIONSTREAM_SHARED_DIR=str(shared_path()), ACTIONSTREAM_DATA_DIR=str(tmp / "data"),
               **SHORT_CLIP_RULE,
               ACTIONSTREAM_THREADS="1", **({MARKER_VAR: marker} if marker else {}))
    return subprocess.run([sys.executable, "-m", "workers", "replay", "run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _window(e: dict) -> tuple:
    return e["track_id"], e["label"], e["frame_start"], e["frame_end"], e["score"]


def test_replay_run_replays_the_archive_up_left_with_nothing_else_running(archived, tmp_path):
    archive, live = archived
    marker = new_marker()
    proc = _replay_run(tmp_path, "--archive", str(archive), "--camera", CAMERA, marker=marker)
    assert proc.returncode == 0, proc.stderr[-3000:]
    replayed = [json.loads(line) for line in proc.stdout.splitlines()]
    # the live run's events, window for window and score for score, as its replay camera's
    assert sorted(map(_window, replayed)) == sorted(map(_window, live)) and replayed
    job = replayed[0]["job"]
    assert all(e["camera"] == keys.replay_camera(CAMERA, job) and e["job"] == job for e in replayed)
    assert f"job {job}: DONE" in proc.stderr and f"{FRAMES}/{FRAMES} items" in proc.stderr
    assert not wait_pids_gone(family(marker), 10), "replay run left processes behind (its Redis, workers)"

    proc = _replay_run(tmp_path, "--archive", str(archive), "--camera", CAMERA, "--skeletons",
                       "--consecutive", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = min(e["frame_end"] for e in map(json.loads, proc.stdout.splitlines()) if e["label"] == "falling")
    assert first < min(e["frame_end"] for e in live if e["label"] == "falling")  # one window in a row
    assert "into action" in proc.stderr and f"{FRAMES}/{FRAMES} items" in proc.stderr


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def test_bad_input_echoes_the_times_as_typed_and_the_directory_looked_in(archived, tmp_path):
    archive, _ = archived
    last = max(rec.ts for rec in ArchiveReader(LocalStorage(archive)).read(CAMERA, "frames"))
    later, latest = _iso(last + 3600), _iso(last + 7200)
    for args, error in (
        (["--start", latest, "--end", later], f"--start {latest} is not before --end {later}"),
        (["--start", later], f"no archived frames between {later} and the end in {archive}"),
        (["--start", later, "--end", latest], f"between {later} and {latest} in {archive}"),
    ):
        proc = _replay_run(tmp_path, "--archive", str(archive), "--camera", CAMERA, *args, timeout=60)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and error in err and len(err.splitlines()) == 1, (args, err)
        assert not re.search(r"\d{10}\.\d", err), err  # no epoch seconds the user never typed
    empty = tmp_path / "empty"
    proc = _replay_run(tmp_path, "--archive", str(empty), "--camera", CAMERA, timeout=60)
    assert proc.returncode == 2 and f"camera {CAMERA} has nothing archived in {empty}" in proc.stderr


@pytest.fixture
def procs(r, redis_url, tmp_path):
    env = dict(os.environ, **SHORT_CLIP_RULE, ACTIONSTREAM_REDIS_URL=redis_url,
               ACTIONSTREAM_SHARED_DIR=str(shared_path()),
               ACTIONSTREAM_DATA_DIR=str(tmp_path / "data"), ACTIONSTREAM_LEASE_TTL_S="2",
               ACTIONSTREAM_JOBS_VISIBILITY_TIMEOUT_S="4", ACTIONSTREAM_THREADS="1",
               ACTIONSTREAM_LOG_LEVEL="INFO")
    p = Procs(tmp_path, env)
    yield p
    p.stop()


def test_a_jobs_worker_that_reads_another_archive_fails_the_job_naming_its_directory(archived, r, procs,
                                                                                      tmp_path):
    archive, _ = archived
    elsewhere = tmp_path / "worker-archive"  # the jobs worker's archive: not where the camera is
    procs.start("jobs", "jobs-worker", "--concurrency", "1", env={"ACTIONSTREAM_ARCHIVE_DIR": str(elsewhere)})
    procs.start("action", "action-worker")  # a replay that published nothing would end DONE, 0 items
    procs.env["ACTIONSTREAM_ARCHIVE_DIR"] = str(archive)  # the submit command sees the camera
    rc, out, err = procs.cli("replay", "submit", "--camera", CAMERA, "--skeletons", "--follow")
    job = out.splitlines()[0]
    assert rc == 1, (out, err[-2000:], procs.log("jobs"))
    assert f"job {job}: FAILED" in out and f"nothing archived in {elsewhere}" in out, out
    assert "ACTIONSTREAM_ARCHIVE_DIR" in registry.state_of(r, job)["reason"]
    assert published(r, job).published == 0


def test_following_a_job_under_way_shows_a_true_rate(r, procs, tmp_path):
    procs.start("jobs", "jobs-worker", "--concurrency", "1", env=NO_PIPELINE)
    job = procs.submit("--source", str(shared_path("data", "urfd", "fall-03-cam0.mp4")), "--speed", "1")
    assert wait_until(lambda: published(r, job).published >= 60, 60), procs.log("jobs")  # 30 frames/s
    with open(tmp_path / "follow.err", "w") as err:
        follow = subprocess.Popen([sys.executable, "-m", "workers", "replay", "status", job, "--follow"],
                                  cwd=ROOT, env=procs.env, stdout=subprocess.PIPE, stderr=err, text=True)
        time.sleep(2.5)
        assert procs.cli("replay", "cancel", job)[0] == 0
        out, _ = follow.communicate(timeout=30)
    assert follow.returncode == 1 and "CANCELLED" in out and state(r, job) == "CANCELLED", out
    bar = (tmp_path / "follow.err").read_text()
    rates = [float(x) for x in re.findall(r"([\d.]+)item/s", bar)]
    assert rates and max(rates) < 60, bar  # the replay runs at 30 frames/s
