"""``actionstream events`` from the history: durations such as ``1h`` and the printing."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Callable, Optional, TextIO

from workers.history.store import EventStore, HistoryError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"1h"``, ``"2d"``, ``"1w"`` in seconds; HistoryError else."""
    m = _DURATION.match(text or "")
    if not m:
        raise HistoryError(f"--since {text!r}: expected a duration such as 30s, 15m, 1h, 2d or 1w")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def print_history(store: EventStore, since: Optional[str] = None, camera: Optional[str] = None,
                  label: Optional[str] = None, limit: int = 100, out: Optional[TextIO] = None,
                  clock: Callable[[], float] = time.time) -> int:
    """Print the newest ``limit`` stored events that match, oldest first, as JSON lines."""
    if limit < 1:
        raise HistoryError(f"--limit {limit}: must be 1 or more")
    start = clock() - parse_duration(since) if since else None
    rows = store.query(since=start, camera=camera, label=label, limit=limit)
    out = out or sys.stdout
    for row in reversed(rows):
        out.write(json.dumps(row, separators=(",", ":")) + "\n")
    out.flush()
    return 0
