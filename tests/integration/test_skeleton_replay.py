"""Skeleton files straight into the action stage, as a user runs it: ``up --skeletons PATH``
and ``replay submit --source PATH --skeletons`` with a real Redis, a real Celery jobs-worker
and a real action worker with the shipped fall model.

The file is the one ``up --skeletons-out`` wrote from a real run of a URFD fall clip (its
pose worker, tracker and fall event); replayed, it raises the same label on the same track
at the same frames. Bad files in a folder are one line each and the rest is replayed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared import codec, keys
from tests.conftest import ROOT, shared_path
from tests.integration.test_replay_jobs import Procs, state
from tests.procs import wait_until
from workers.jobs import registry

pytestmark = pytest.mark.integration
CAMERA = "urfd-05"
BAD = {"a-not-json.json": ("not JSON", "not json {"),
       "c-layout.json": ("no \"data\" list", json.dumps({"frames": [1, 2]})),
       "d-empty.json": ("holds no frames", json.dumps({"data": [], "label": "x", "label_index": 0}))}


def _cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def _windows(events) -> list[tuple]:
    return sorted((e.track_id, e.label, e.frame_start, e.frame_end) for e in events)


def _events(path: Path) -> list:
    return [codec.decode_event(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def urfd_run(tmp_path_factory):
    """A real `up` run of URFD fall-05 (cropped to cam0's view): its skeleton export and events."""
    video = shared_path("data", "urfd", "fall-05-cam0.mp4")
    out = tmp_path_factory.mktemp("urfd-run")
    proc = _cli("up", "--no-progress", "--no-web", "--no-history", "--source", str(video), "--camera", CAMERA,
                "--crop", "320,0,320,240", "--skeletons-out", str(out / "sk"), "--events-out",
                str(out / "ev.jsonl"), env={"ACTIONSTREAM_SHARED_DIR": str(shared_path())})
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = _events(out / "ev.jsonl")
    assert [e.label for e in events] == ["falling"], events
    return out / "sk" / f"{CAMERA}.json", events


def test_up_skeletons_raises_the_runs_event_from_its_export(urfd_run, tmp_path):
    export, live = urfd_run
    doc = json.loads(export.read_text())
    assert (doc["width"], doc["height"], doc["fps"]) == (320, 240, 30.0)  # the frame the run saw
    ev = tmp_path / "ev.jsonl"
    proc = _cli("up", "--no-progress", "--no-web", "--no-history", "--skeletons", str(export),
                "--events-out", str(ev))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pose-worker" not in proc.stderr and "producer" not in proc.stderr  # the action stage only
    replayed = _events(ev)
    assert _windows(replayed) == _windows(live)
    assert all(e.camera == CAMERA for e in replayed)
    for a, b in zip(sorted(replayed, key=lambda e: e.frame_end), sorted(live, key=lambda e: e.frame_end)):
        assert a.score == pytest.approx(b.score, abs=1e-3)  # keypoints kept to 4 decimals


def test_up_skeletons_names_each_bad_file_in_one_line_and_replays_the_rest(urfd_run, tmp_path):
    export, live = urfd_run
    folder = tmp_path / "clips"
    folder.mkdir()
    for name, (_, text) in BAD.items():
        (folder / name).write_text(text)
    shutil.copy(export, folder / "b-urfd.json")
    kinetics = shared_path("data", "kinetics", "skeleton_json", "--33Lscn6sk.json")  # a genuine one
    shutil.copy(kinetics, folder / "e-kinetics.json")
    ev = tmp_path / "ev.jsonl"
    proc = _cli("up", "--no-progress", "--no-web", "--no-history", "--skeletons", str(folder),
                "--events-out", str(ev))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, (reason, _) in BAD.items():
        lines = [line for line in proc.stderr.splitlines() if name in line]
        assert len(lines) == 1 and reason in lines[0], (name, proc.stderr[-3000:])
    assert not any("kinetics" in line or "b-urfd" in line for line in proc.stderr.splitlines()
                   if "WARNING" in line or "ERROR" in line)
    replayed = _events(ev)
    falls = [w for w in _windows(replayed) if w[1] == "falling"]
    assert falls == _windows(live)  # the first file keeps its frame numbers
    assert "340 skeleton frames" in proc.stderr  # URFD's 151 and the Kinetics clip's 189 frames

    (folder / "b-urfd.json").unlink()
    (folder / "e-kinetics.json").unlink()
    none = _cli("up", "--no-progress", "--no-web", "--no-history", "--skeletons", str(folder))
    assert none.returncode == 2 and "no readable skeleton file" in none.stderr, none.stderr[-2000:]
    both = _cli("up", "--skeletons", str(export), "--source", "x.mp4")
    assert both.returncode == 2 and "--source cannot go with it" in both.stderr, both.stderr[-2000:]


@pytest.fixture
def procs(r, redis_url, tmp_path):
    env = dict(os.environ, ACTIONSTREAM_REDIS_URL=redis_url, ACTIONSTREAM_DATA_DIR=str(tmp_path / "data"),
               ACTIONSTREAM_LEASE_TTL_S="2", ACTIONSTREAM_THREADS="1", ACTIONSTREAM_LOG_LEVEL="INFO")
    p = Procs(tmp_path, env)
    yield p
    p.stop()


def test_replay_submit_of_skeleton_files_with_a_jobs_worker(urfd_run, r, procs, tmp_path):
    export, live = urfd_run
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(export, folder / "b-urfd.json")
    (folder / "a-not-json.json").write_text(BAD["a-not-json.json"][1])
    procs.start("action-worker", "action-worker")
    procs.start("jobs", "jobs-worker", "--concurrency", "2")

    job = procs.submit("--source", str(export), "--skeletons")
    rc, out, err = procs.cli("replay", "status", job, "--follow")
    assert rc == 0 and "DONE" in out and "151/151 items" in out, (out, err[-2000:], procs.log("jobs"))
    assert f"camera {CAMERA}~{job}" in out and "into action" in out
    rc, out, _ = procs.cli("replay", "events", job)
    replayed = [codec.decode_event(line) for line in out.splitlines()]
    assert _windows(replayed) == _windows(live)
    assert all(e.camera == keys.replay_camera(CAMERA, job) and e.job == job for e in replayed)
    assert not r.exists(keys.EVENTS_STREAM)  # a replay's events never reach the live stream

    rc, out, err = procs.cli("replay", "submit", "--source", str(folder), "--skeletons", "--camera", "clips")
    assert rc == 0, err
    bad = [line for line in err.splitlines() if "a-not-json.json" in line]
    assert len(bad) == 1 and "not JSON" in bad[0], err  # named at submit, the job queued
    second = out.strip().splitlines()[-1]
    assert wait_until(lambda: state(r, second) == "DONE", 120), procs.log("jobs")
    out = procs.cli("replay", "events", second)[1]
    assert _windows(map(codec.decode_event, out.splitlines())) == _windows(live)
    assert "a-not-json.json" in procs.log("jobs")  # the worker names it too, and goes on
    assert registry.state_of(r, second)["skipped"] == 1
