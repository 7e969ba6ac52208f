"""Start the processes of a run and keep them alive: restart a crashed one with backoff.

Each child gets this process's pid in its environment and ends when this process ends,
SIGKILL included (see :mod:`shared.lifeline`)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from shared.lifeline import child_environment

log = logging.getLogger(__name__)

USER_ERROR = 2  # exit code of a process that was given bad input: restarting will not help


@dataclass
class ProcSpec:
    name: str
    argv: list[str]  # arguments after `actionstream`
    restart: bool = True
    max_restarts: int = 5


@dataclass
class Child:
    spec: ProcSpec
    proc: Optional[subprocess.Popen] = None
    restarts: int = 0
    next_start: float = 0.0
    exit_code: Optional[int] = None
    history: list[int] = field(default_factory=list)


class Supervisor:
    """Runs children until each exits 0 (or fails for good). Nothing starts in __init__."""

    def __init__(self, specs: list[ProcSpec], env: dict[str, str]) -> None:
        self.children = [Child(s) for s in specs]
        self.env = env

    def _spawn(self, child: Child) -> None:
        cmd = [sys.executable, "-m", "workers.cli", *child.spec.argv]
        child.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL)
        log.info("started %s (pid %d)", child.spec.name, child.proc.pid)

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def poll(self) -> bool:
        """Check children once; restart crashed ones. True while any is still running."""
        now = time.monotonic()
        running = False
        for child in self.children:
            if child.exit_code is not None:
                continue
            if child.proc is None:
                if now >= child.next_start:
                    self._spawn(child)
                running = True
                continue
            code = child.proc.poll()
            if code is None:
                running = True
            elif code == 0:
                child.exit_code = 0
                log.info("%s finished", child.spec.name)
            else:
                running = self._crashed(child, code, now) or running
        return running

    def _crashed(self, child: Child, code: int, now: float) -> bool:
        child.history.append(code)
        child.proc = None
        if code == USER_ERROR or not child.spec.restart or child.restarts >= child.spec.max_restarts:
            child.exit_code = code
            log.error("%s exited with %d; not restarted", child.spec.name, code)
            return False
        child.restarts += 1
        delay = min(0.5 * 2 ** (child.restarts - 1), 10.0)
        child.next_start = now + delay
        log.warning("%s exited with %d; restart %d in %.1f s", child.spec.name, code,
                    child.restarts, delay)
        return True

    def failed(self) -> list[Child]:
        return [c for c in self.children if c.exit_code not in (None, 0)]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every child, then SIGKILL what is left after ``timeout``."""
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in live:
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in live:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killed", child.spec.name, timeout)
                child.proc.kill()
                child.proc.wait()


def child_env(redis_url: str, extra: dict[str, str]) -> dict[str, str]:
    """The children's environment: this one, the run's Redis, ``extra``, and this process's
    pid, so that each child ends with it (:mod:`shared.lifeline`) however it ends."""
    env = dict(os.environ)
    env["ACTIONSTREAM_REDIS_URL"] = redis_url
    env.update(extra)
    return child_environment(env)
