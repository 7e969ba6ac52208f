"""Start the processes of a run and keep them alive: restart a crashed one with backoff.

Each child gets this process's pid in its environment and ends when this process ends,
SIGKILL included (see :mod:`shared.lifeline`). Each child also gets an unnamed temporary
file (its descriptor in :data:`REASON_FD_ENV`) where the command writes its one-line error
before it exits (:func:`report_exit_reason`), so that a child that fails for good is
reported with its reason, not only its exit code."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from shared.errors import UserError
from shared.backoff import nominal_delay
from shared.lifeline import child_environment

log = logging.getLogger(__name__)

USER_ERROR = 2  # exit code of a process that was given bad input: restarting will not help
INTERRUPTED = (130, -signal.SIGINT)  # a child that ended on SIGINT (Ctrl-C): the run is being stopped
REASON_FD_ENV = "ACTIONSTREAM_REASON_FD"
_reason_fd: Optional[int] = None


class ChildFailed(UserError, RuntimeError):
    """Children of a run failed for good (``describe`` of each); ``exit_code`` 2 when each of
    them was given bad input (restarting will not help), else 1."""

    def __init__(self, children: list["Child"]) -> None:
        super().__init__("; ".join(c.describe() for c in children) + "; the run is stopped")
        self.exit_code = USER_ERROR if all(c.exit_code == USER_ERROR for c in children) else 1


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
    reason: str = ""  # the last start's one-line error, if it wrote one
    reason_file: Optional[object] = None

    def describe(self) -> str:
        """``name exited with CODE[: reason]`` of a child that has failed for good."""
        code = self.exit_code
        how = f"exited with {code}"
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                pass
        restarts = f" after {self.restarts} restarts" if self.restarts else ""
        return f"{self.spec.name} {how}{restarts}" + (f": {self.reason}" if self.reason else "")


class Supervisor:
    """Runs children until each exits 0 (or fails for good). Nothing starts in __init__."""

    extra_fds: tuple[int, ...] = ()  # descriptors every child inherits

    def __init__(self, specs: list[ProcSpec], env: dict[str, str]) -> None:
        self.children = [Child(s) for s in specs]
        self.env = env
        self.interrupted = False  # a child ended on SIGINT

    def _spawn(self, child: Child) -> None:
        cmd = [sys.executable, "-m", "workers", *child.spec.argv]
        _close_reason(child)
        child.reason_file = tempfile.TemporaryFile(prefix="actionstream-reason-")
        fd = child.reason_file.fileno()
        child.proc = subprocess.Popen(cmd, env={**self.env, REASON_FD_ENV: str(fd)}, stdin=subprocess.DEVNULL,
                                      pass_fds=(*self.extra_fds, fd))
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
        child.reason = _read_reason(child)
        if code in INTERRUPTED:
            child.exit_code = code
            self.interrupted = True
            log.warning("%s was interrupted (SIGINT); the run stops", child.spec.name)
            return False
        if code == USER_ERROR or not child.spec.restart or child.restarts >= child.spec.max_restarts:
            child.exit_code = code
            log.error("%s exited with %d; not restarted", child.spec.name, code)
            return False
        child.restarts += 1
        delay = nominal_delay(child.restarts - 1, 0.5, 10.0)  # no jitter: one parent, no herd
        child.next_start = now + delay
        log.warning("%s exited with %d; restart %d in %.1f s", child.spec.name, code,
                    child.restarts, delay)
        return True

    def failed(self) -> list[Child]:
        """The children that have failed for good (not restarted any more)."""
        return [c for c in self.children if c.exit_code not in (None, 0, *INTERRUPTED)]

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
        for child in self.children:
            _close_reason(child)


def _read_reason(child: Child) -> str:
    """The one line the child's last start wrote to its reason file ("" when none)."""
    if child.reason_file is None:
        return ""
    try:
        child.reason_file.seek(0)
        lines = child.reason_file.read().decode(errors="replace").strip().splitlines()
    except (OSError, ValueError):
        return ""
    return " ".join(lines[-1].split()) if lines else ""


def _close_reason(child: Child) -> None:
    if child.reason_file is not None:
        child.reason_file.close()
        child.reason_file = None


def take_reason_fd() -> None:
    """In a child started by a :class:`Supervisor`: keep the reason file's descriptor for
    :func:`report_exit_reason`; the variable is removed so this process's children do not inherit it."""
    global _reason_fd
    raw = os.environ.pop(REASON_FD_ENV, "")
    _reason_fd = int(raw) if raw.isdigit() else None


def report_exit_reason(message: str) -> None:
    """Tell the supervising process why this one exits (one line); nothing when not supervised."""
    if _reason_fd is None:
        return
    try:
        os.write(_reason_fd, (" ".join(message.split()) + "\n").encode())
    except OSError:
        pass


def child_env(redis_url: str, extra: dict[str, str]) -> dict[str, str]:
    """The children's environment: this one, the run's Redis, ``extra``, and this process's
    pid, so that each child ends with it (:mod:`shared.lifeline`) however it ends."""
    env = dict(os.environ)
    env["ACTIONSTREAM_REDIS_URL"] = redis_url
    env.update(extra)
    return child_environment(env)
