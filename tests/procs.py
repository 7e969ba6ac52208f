"""Finding a run's processes by a marker in their environment (Linux /proc).

Every process a command starts inherits the environment, so a marker put there finds them
all, orphans included. A program may overwrite its environment block (valkey-server does,
to set its process title): :func:`family` adds the descendants of the marked processes.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

MARKER_VAR = "ACTIONSTREAM_TEST_RUN"


def new_marker() -> str:
    return uuid.uuid4().hex


def processes_with(marker: str) -> list[int]:
    """Pids of live (not zombie) processes whose environment holds ``MARKER_VAR=marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            alive = "\nState:\tZ" not in (entry / "status").read_text()
            if alive and needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _parents() -> dict[int, int]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def family(marker: str) -> set[int]:
    """The marked processes and all their live descendants, now."""
    found = set(processes_with(marker))
    parents = _parents()
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found and pid not in found}
        grew = bool(more)
        found |= more
    return {pid for pid in found if _alive(pid)}


def wait_pids_gone(pids: set[int], timeout: float = 10.0) -> list[int]:
    """Those of ``pids`` still alive after waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def wait_until(condition, timeout: float, step: float = 0.1):
    """Poll ``condition()`` until it is truthy or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(step)
    return value


def wait_gone(marker: str, timeout: float = 10.0) -> list[int]:
    """The marked processes still alive after waiting up to ``timeout`` for them to end."""
    deadline = time.monotonic() + timeout
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
