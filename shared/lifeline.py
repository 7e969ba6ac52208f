"""Child processes that end with their parent, however the parent ends (SIGKILL included).

On Linux the child asks the kernel for a signal when its parent dies (``prctl`` with
``PR_SET_PDEATHSIG``) and then checks that its parent is still the one that started it,
which closes the race of a parent dying before the call. Elsewhere a daemon thread checks
the parent once a second. The signal (SIGTERM by default) makes the child stop as on any
SIGTERM: finish the batch in hand, ack, release its leases.

A parent passes its pid to a child in :data:`PARENT_ENV`; the child calls
:func:`from_environment` first thing. Standard library only (``shared`` is the ground floor).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

PARENT_ENV = "ACTIONSTREAM_PARENT_PID"
PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel for ``sig`` when the parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, sig: int, poll_s: float) -> None:
    def loop() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), sig)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM, poll_s: float = 1.0) -> None:
    """Receive ``sig`` once ``parent_pid`` (this process's parent) has ended."""
    if not set_parent_death_signal(sig):
        _watch(parent_pid, sig, poll_s)
    if os.getppid() != parent_pid:  # it ended before we asked: the signal will not come
        log.warning("parent %d is gone; stopping", parent_pid)
        os.kill(os.getpid(), sig)


def from_environment(sig: int = signal.SIGTERM) -> None:
    """In a child started with :data:`PARENT_ENV`: :func:`die_with_parent` of that pid. The
    variable is removed so that this process's own children do not inherit it."""
    raw = os.environ.pop(PARENT_ENV, "")
    if raw.isdigit():
        die_with_parent(int(raw), sig)


def child_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` plus this process's pid as :data:`PARENT_ENV`."""
    return {**env, PARENT_ENV: str(os.getpid())}
