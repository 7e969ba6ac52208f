"""The pure core of a replay job: its spec, pacing (clock injected), progress and ETA, and
the checkpoint that makes a resumed job publish every frame exactly once.

A replay is a camera of its own (``<camera>~<job>``, ARCHITECTURE.md, the flow). It reads a
source (a camera's archive between two times, a video file, a folder of them), publishes
its items into the pose stage (frames) or the action stage (archived skeletons), at the
original speed, N times it, or as fast as the pipeline takes it (``speed`` 0: backpressure
only, nothing is dropped). The I/O loop is :mod:`workers.jobs.runner`.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping, Optional

from shared import keys
from shared.errors import ActionstreamError, UserError

SOURCES = ("archive", "video", "skeletons")  # skeletons: Kinetics-skeleton JSON files
TARGETS = (keys.POSE_GROUP, keys.ACTION_GROUP)
# job states: QUEUED (submitted) -> RUNNING (publishing) -> DRAINING (everything published,
# the stages finish the camera) -> DONE; or CANCELLED, FAILED (with the reason)
FINAL_STATES = ("DONE", "CANCELLED", "FAILED")


class ReplayError(UserError, ValueError):
    """A replay cannot be submitted as asked (bad source, range, option); the text says why."""


class ReplayFailed(ActionstreamError, RuntimeError):
    """A running replay cannot go on (a corrupt video mid-way, a source gone); the reason."""


@dataclass(frozen=True)
class JobSpec:
    """What a replay job does; travels as JSON (the task's argument and the job registry)."""

    job: str
    camera: str  # the camera replayed (archive), or the name given to a video replay
    source: str  # "archive", "video" or "skeletons" (files, :mod:`workers.jobs.skeleton_files`)
    target: str  # the stage it feeds: "pose" (frames) or "action" (skeletons)
    path: str = ""  # video, skeletons: a file or a folder
    start_ts: Optional[float] = None  # archive: capture times, start inclusive, end exclusive
    end_ts: Optional[float] = None
    speed: float = 0.0  # 1: original speed, N: N times it, 0: as fast as the pipeline takes it
    fps: Optional[float] = None  # video: the rate its ts are stamped at (None: the file's own);
    # skeletons: the rate of files that give none
    t0: float = 0.0  # video: the ts of its first frame (the submit time), the same on a resume
    threshold: Optional[float] = None  # rule overrides for this replay camera only
    consecutive: Optional[int] = None
    created: float = 0.0
    size: str = ""  # skeletons: WxH of files that give no frame size ("": 340x256)

    def __post_init__(self) -> None:
        try:
            keys.replay_camera(self.camera, self.job)
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        if self.source not in SOURCES:
            raise ReplayError(f"replay source {self.source!r} is unknown; expected one of {SOURCES}")
        if self.target not in TARGETS:
            raise ReplayError(f"replay target {self.target!r} is unknown; expected one of {TARGETS}")
        if self.source == "video" and self.target != keys.POSE_GROUP:
            raise ReplayError("a video replays into the pose stage (it has no skeletons)")
        if self.source == "skeletons" and self.target != keys.ACTION_GROUP:
            raise ReplayError("skeleton files replay into the action stage (they have no frames)")
        if not (math.isfinite(self.speed) and self.speed >= 0):
            raise ReplayError(f"--speed {self.speed} must be a positive factor, or 'max'")
        if self.start_ts is not None and self.end_ts is not None and self.start_ts >= self.end_ts:
            raise ReplayError(f"--start {_when(self.start_ts)} is not before --end {_when(self.end_ts)}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ReplayError(f"--threshold {self.threshold} is not within 0..1")
        if self.consecutive is not None and self.consecutive < 1:
            raise ReplayError(f"--consecutive {self.consecutive} must be at least 1")

    @property
    def replay_camera(self) -> str:
        return keys.replay_camera(self.camera, self.job)

    @property
    def kind(self) -> str:
        """The archive kind (and stream) it publishes: frames into pose, skeletons into action."""
        return "frames" if self.target == keys.POSE_GROUP else "skeletons"

    @property
    def rules(self) -> dict:
        """Rule overrides for the action worker (the camera's registration carries them)."""
        given = {"threshold": self.threshold, "consecutive": self.consecutive}
        return {k: v for k, v in given.items() if v is not None}

    def describe(self) -> str:
        if self.source == "video":
            return self.path
        if self.source == "skeletons":
            return f"skeletons {self.path}"
        if self.start_ts is None and self.end_ts is None:
            return f"archive {self.camera} {self.kind} (all)"
        return f"archive {self.camera} {self.kind} {_when(self.start_ts)}..{_when(self.end_ts)}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "JobSpec":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - names)
        if unknown:
            raise ReplayError(f"replay spec has unknown fields {unknown}")
        return cls(**doc)


def _when(ts: Optional[float]) -> str:
    """A capture time as ISO 8601 UTC (empty: open)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class Pacer:
    """When each item is due: source time ``ts`` scaled by ``speed`` from the first item
    paced (0: never wait). A resumed job anchors at the first item it publishes."""

    def __init__(self, speed: float, clock: Callable[[], float]) -> None:
        self.speed, self.clock = speed, clock
        self._anchor: Optional[tuple[float, float]] = None  # (wall time, ts) of the first item

    def delay(self, ts: float) -> float:
        """Seconds to wait before publishing the item of source time ``ts``."""
        if self.speed <= 0:
            return 0.0
        now = self.clock()
        if self._anchor is None:
            self._anchor = (now, ts)
        wall0, ts0 = self._anchor
        return max(0.0, wall0 + (ts - ts0) / self.speed - now)


class Progress:
    """Items done out of the total, and the ETA from the rate since this run started."""

    def __init__(self, total: Optional[int], done: int, clock: Callable[[], float]) -> None:
        self.total, self.done, self.clock = total, done, clock
        self._start, self._start_done = clock(), done
        self._last = self._start  # when the last item was done

    def advance(self, n: int = 1) -> None:
        self.done += n
        if n:
            self._last = self.clock()

    def rate(self) -> Optional[float]:
        """Items a second done by this run (a resumed job's earlier items not counted), up to
        its last item; None before it has done one."""
        did, elapsed = self.done - self._start_done, self._last - self._start
        return round(did / elapsed, 2) if did > 0 and elapsed > 0 else None

    def eta_s(self) -> Optional[float]:
        if not self.total:
            return None
        left = max(0, self.total - self.done)
        elapsed, did = self.clock() - self._start, self.done - self._start_done
        if left == 0:
            return 0.0
        if did <= 0 or elapsed <= 0:
            return None
        return round(left * elapsed / did, 1)

    def meta(self, phase: str) -> dict:
        """The task's PROGRESS meta (JSON)."""
        return {"done": self.done, "total": self.total, "eta_s": self.eta_s(), "rate": self.rate(),
                "phase": phase}


@dataclass(frozen=True)
class Checkpoint:
    """Where a job stands in Redis (:func:`keys.job_checkpoint_key`), written in the same
    script as each published item: the last source ``seq`` published, how many were
    published, whether the end of stream was."""

    seq: Optional[int] = None
    published: int = 0
    eos: bool = False

    @classmethod
    def from_hash(cls, raw: Mapping) -> "Checkpoint":
        doc = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        seq = doc.get("seq")
        return cls(None if seq is None else int(seq), int(doc.get("published", 0)), "eos" in doc)

    @property
    def end_seq(self) -> int:
        """The EndOfStream's seq: one past the last item published (0 when none was)."""
        return 0 if self.seq is None else self.seq + 1
