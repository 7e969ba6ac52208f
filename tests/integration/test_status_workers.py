"""`actionstream status` lists every long-running worker by its heartbeat: the Celery jobs
worker too (it has no stream loop of its own). A real Redis, the real command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.procs import wait_until

pytestmark = pytest.mark.integration


def _status(redis_url: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "workers", "status", "--redis", redis_url], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _jobs_workers(redis_url: str) -> list[dict]:
    return [w for w in _status(redis_url)["workers"] if w.get("stage") == "jobs"]


def test_status_lists_the_jobs_worker_while_it_runs(r, redis_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONSTREAM_")}
    env["ACTIONSTREAM_LEASE_TTL_S"] = "3"
    worker = subprocess.Popen([sys.executable, "-m", "workers", "jobs-worker", "--redis", redis_url,
                               "--concurrency", "1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        listed = wait_until(lambda: _jobs_workers(redis_url), 60, step=0.5)
        assert listed, worker.stderr.read()[-2000:] if worker.poll() is not None else "not listed"
        assert listed[0]["worker"] == f"jobs-{worker.pid}" and listed[0]["concurrency"] == 1
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert _jobs_workers(redis_url) == []  # gone at once, not one TTL later
