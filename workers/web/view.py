"""The page's pure parts: a camera's annotated view, current labels, events, health figures.

No I/O here: :mod:`workers.web.data` reads Redis and hands these functions what it read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import cv2
import numpy as np

from shared import codec
from shared.redisio import text
from shared.schemas import Event, Frame, Skeletons
from shared.drawing import draw_frame, track_text

MAX_SKEW = 15  # frames: skeletons of a frame at most this far from the one shown are drawn on it
ALERT_WINDOW_S = 5.0  # an event is bannered on the view for this long (source time) after its window
VIEW_QUALITY = 80


@dataclass(frozen=True)
class Score:
    """A classified window's top label (an entry of ``keys.scores_stream``)."""

    track_id: int
    label: str
    score: float
    frame_end: int


def parse_score(fields: Mapping[Any, Any]) -> Optional[Score]:
    """The score entry's fields (bytes or text keys), or None when they are not a score."""
    f = {text(k): text(v) for k, v in fields.items()}
    try:
        score = float(f["score"])
        out = Score(int(f["track_id"]), f["label"], score, int(f["frame_end"]))
    except (KeyError, ValueError):
        return None
    return out if math.isfinite(score) else None


def current_labels(scores: Iterable[Score], track_ids: Iterable[int],
                   seq: int) -> dict[int, tuple[str, float]]:
    """track -> (label, score) of its newest window ending at or before ``seq``, for the
    tracks shown (``scores`` newest first)."""
    wanted = set(track_ids)
    out: dict[int, tuple[str, float]] = {}
    for s in scores:
        if s.track_id in wanted and s.track_id not in out and s.frame_end <= seq:
            out[s.track_id] = (s.label, s.score)
    return out


def alerts_at(events: Iterable[Event], camera: str, seq: int, fps: float,
              window_s: float = ALERT_WINDOW_S) -> list[Event]:
    """The camera's events whose window ended within ``window_s`` (source time) before ``seq``."""
    span = window_s * (fps if fps and fps > 0 else 30.0)
    return [e for e in events if e.camera == camera and seq - span <= e.frame_end <= seq]


def people_for(frame: Frame, skeletons: Optional[Skeletons], max_skew: int = MAX_SKEW) -> tuple:
    """The people to draw on ``frame``: those of ``skeletons`` when it is of the same size
    and within ``max_skew`` frames of it, none otherwise."""
    if skeletons is None or abs(skeletons.seq - frame.seq) > max_skew:
        return ()
    if (skeletons.width, skeletons.height) != (frame.width, frame.height):
        return ()
    return skeletons.people


def render_view(image: np.ndarray, people: Sequence, labels: dict[int, tuple[str, float]],
                alerts: list[Event], quality: int = VIEW_QUALITY) -> bytes:
    """The annotated view as JPEG bytes (skeletons, track ids, labels, alert banners)."""
    drawn = draw_frame(image, people, labels, alerts)
    ok, buf = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("the view could not be encoded as JPEG")
    return buf.tobytes()


def view_meta(seq: int, people: Sequence, labels: dict[int, tuple[str, float]]) -> dict:
    """What a drawn view shows, as JSON: its frame ``seq``, ``people`` (a count) and
    ``labels`` (track -> label and score, as drawn: the page's footer shows these, so it never
    says another label than the picture)."""
    return {"seq": seq, "people": len(people),
            "labels": {str(t): {"label": lb, "score": round(s, 4), "text": track_text(t, lb, s)}
                       for t, (lb, s) in labels.items()}}


def event_row(event: Event, snapshot: Optional[str] = None) -> dict:
    """The JSON form of an event on the page: its fields plus ``snapshot`` (a URL or None)."""
    return {**codec.event_to_dict(event), "snapshot": snapshot}


def matches(row: Mapping[str, Any], since: Optional[float], camera: Optional[str],
            label: Optional[str]) -> bool:
    return ((since is None or row["emitted_at"] >= since) and (camera is None or row["camera"] == camera)
            and (label is None or row["label"] == label))


def merge_events(stored: Iterable[dict], streamed: Iterable[dict], limit: int) -> list[dict]:
    """Events of the history and of the Redis stream, one per id (the history's row, which
    knows the snapshot, wins), newest first, at most ``limit``."""
    by_id: dict[str, dict] = {}
    for row in streamed:
        by_id[row["id"]] = row
    for row in stored:
        if row.get("snapshot") or row["id"] not in by_id:
            by_id[row["id"]] = row
    rows = sorted(by_id.values(), key=lambda r: (-r["emitted_at"], r["id"]))
    return rows[:max(0, limit)]


def replay_row(spec, state: Mapping[str, Any], published: int) -> dict:
    """A replay job (its ``workers.jobs.replay.JobSpec``, registry state and items published)
    as the page shows it."""
    total = state.get("total")
    name = state.get("state", "UNKNOWN")
    if name == "DONE":
        progress: Optional[float] = 1.0
    elif total:
        progress = round(min(1.0, published / total), 4)
    else:
        progress = None
    return {"id": spec.job, "camera": spec.replay_camera, "replayed": spec.camera, "source": spec.describe(),
            "target": spec.target, "state": name, "reason": state.get("reason"), "published": published,
            "total": total, "progress": progress, "events": state.get("events"), "created": spec.created,
            "updated": state.get("updated")}


def health_summary(status: Mapping[str, Any], now: float) -> dict:
    """``shared.ops.status`` with each worker's heartbeat age and an overall ``ok``: every
    camera has a pose and an action owner and no dead letters were written. Of the numbers
    each process serves, only where they are (``metrics``: process -> URL) is kept: the page
    asks every two seconds, Prometheus keeps the rest."""
    workers = [{**w, "age_s": round(max(0.0, now - float(w.get("at", now))), 2)}
               for w in status.get("workers", [])]
    cameras = status.get("cameras", {})
    unowned = sorted(c for c, s in cameras.items() if not (s.get("pose_owner") and s.get("action_owner")))
    served = {name: m.get("url") for name, m in (status.get("metrics") or {}).items()}
    return {**status, "workers": workers, "metrics": served, "unowned_cameras": unowned,
            "ok": not unowned and not status.get("dead_letters"), "now": now}
