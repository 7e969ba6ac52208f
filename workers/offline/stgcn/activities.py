"""Daily activities as classes of their own (``fall-model --activity-classes``).

A model that has a class for "picking something up" or "sitting down" need not put those
windows in the one "not-falling" class beside walking and waving; the issue's hope is that it
then separates them from falling better. Which clips hold which activity is data: a clip
name pattern per activity class (SmartFallMM ``sfmm-SxxAyyTzz``, NW-UCLA ``ucla-aXX_...``,
UP-Fall ``upfall-Axx-...``), and Penn Action's action names from its ``clips.csv`` (its clip
names are numbers). Only a negative clip's windows get its activity class; a fall clip's
windows before and after the fall stay ``not-falling``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from workers.offline.stgcn.skeletonsets import PREFIX, read_rows

log = logging.getLogger(__name__)

# activity class -> clip name patterns (re.match) and Penn Action action names
ACTIVITIES: dict[str, dict[str, tuple[str, ...]]] = {
    "bending": {  # picking up, dropping trash
        "names": (r"sfmm-S\d+A02T", r"ucla-a0[123]_", r"upfall-A09-"),
        "penn": (),
    },
    "sitting": {  # sitting down, standing up (SmartFallMM's walk starts and ends on a chair), squats
        "names": (r"sfmm-S\d+A0[89]T", r"ucla-a0[56]_", r"upfall-A08-"),
        "penn": ("squat",),
    },
    "on-floor": {  # lying down, floor exercise
        "names": (r"upfall-A11-",),
        "penn": ("pushup", "situp"),
    },
}
CLASSES = ("not-falling", "falling", *ACTIVITIES)


def read_penn_actions(skeleton_root: Optional[str | Path]) -> dict[str, str]:
    """``penn-<clip>`` -> its action, from ``<root>/pennaction/clips.csv`` ({} if absent)."""
    if not skeleton_root or not (Path(skeleton_root) / "pennaction" / "clips.csv").is_file():
        return {}
    return {f"{PREFIX['pennaction']}{row['clip']}": row["action"]
            for row in read_rows(skeleton_root, "pennaction")}


def activity_of(name: str, penn: dict[str, str]) -> str:
    """The activity class of the clip called ``name`` ("" for none)."""
    base = name.split("~", 1)[0]  # extra virtual views: <name>~v<k>
    for activity, where in ACTIVITIES.items():
        if any(re.match(p, base) for p in where["names"]) or penn.get(base) in where["penn"]:
            return activity
    return ""


def assign(clips: Sequence, skeleton_root: Optional[str | Path] = None) -> Counter:
    """Set ``clip.activity`` on every negative clip of ``clips``; the count per class."""
    penn = read_penn_actions(skeleton_root)
    count: Counter = Counter()
    for clip in clips:
        clip.activity = activity_of(clip.name, penn) if clip.kind == "negative" else ""
        count[clip.activity or "other"] += 1
    log.info("activity classes of the clips: %s", dict(count))
    return count
