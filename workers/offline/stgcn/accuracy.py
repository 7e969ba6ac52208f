"""Fall-model figures from the action worker's simulated events: per clip, per dataset,
overall, and the sweep over rule settings.

A fall clip is detected when a ``falling`` event ends at or after the fall's first frame;
its latency is that event's ``frame_end`` minus the fall's last frame, in seconds (negative:
raised before the body was down); events ending before the fall are false alerts before
the fall. Every event on a negative clip is a false alert; ``false_per_hour`` divides them
by the hours of negative (daily-activity) video, all negative clips played back to back.

``fallen`` is simulated too (:func:`clip_fallen`): the still-down watch of the action worker
armed by each ``falling`` event and fed every frame's postures; a ``fallen`` on a negative
clip is a false one (``false_fallen``, per hour likewise). Most negative clips are shorter
than ``fallen_after_s``: a watch still running when one ends (the person not seen getting
up) might have become a false ``fallen`` had the clip gone on, so they are counted too
(``open_watches``) and ``false_fallen_bound_per_hour`` counts them as false alerts. The rule
may be gated by :mod:`workers.action.confirm` (``confirm``: a function of the window), as the
worker gates it.

Sources: the video datasets (``urfd``, ``ntu``, ``upfall``, ``other``) are what users see;
the skeleton-only ones (``smartfall``, ``nwucla``, ``penn``,
:mod:`workers.offline.stgcn.skeletonclips`) are summarised apart (``by_source``).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

VIDEO = ("urfd", "ntu", "upfall", "other")
SKELETON = ("smartfall", "nwucla", "penn")
DATASETS = VIDEO + SKELETON
SOURCES = {"video": VIDEO, "skeleton": SKELETON}


def clip_events(rows: list, classes: Sequence[str], threshold: float, consecutive: int,
                cooldown_s: float, confirm: Optional[Callable] = None) -> list:
    """The ``falling`` events the worker's rules raise on one clip's scored windows
    (``confirm(window, label)``: the worker's gate, or None)."""
    from workers.action.rules import Rule, Rules

    rules = Rules([Rule("falling", threshold, consecutive, cooldown_s)], clock=lambda: 0.0,
                  confirm=confirm)
    events = []
    for ref, probs in rows:
        events.extend(rules.decide(ref, probs, classes, "fall"))
    return events


def clip_fallen(clip, events: list, fallen_after_s: float = 10.0) -> tuple[list, int]:
    """The ``fallen`` decisions of the still-down watch on one clip, armed by ``events``, and
    the number of watches still running at the clip's end."""
    from workers.action.still_down import StillDown, posture

    if not events:
        return [], 0
    watch, out = StillDown(fallen_after_s), []
    arms = sorted(events, key=lambda e: e.frame_end)
    for skel in clip.frames:
        while arms and arms[0].frame_end <= skel.seq:
            e = arms.pop(0)
            watch.arm(clip.name, e.track_id, e.frame_end, e.ts_end)
        out.extend(watch.observe(clip.name, skel.seq, skel.ts,
                                 {p.track_id: posture(p) for p in skel.people}))
    return out, len(watch.watching(clip.name))


def clip_outcome(clip, events: list, fallen: Sequence = (), open_watches: int = 0) -> dict:
    """One clip's figures (see the module doc)."""
    out = {"dataset": clip.dataset, "kind": clip.kind,
           "seconds": round(len(clip.frames) / clip.fps, 2)}
    if clip.kind != "fall":
        return {**out, "false": len(events), "false_fallen": len(fallen), "open_watches": open_watches}
    if clip.fall is None:
        return {**out, "detected": bool(events), "false": 0}
    fs, fe = clip.fall
    after = [e for e in events if e.frame_end >= fs]
    out.update(detected=bool(after), false=sum(e.frame_end < fs for e in events))
    if after:
        out["latency_s"] = round((after[0].frame_end - fe) / clip.fps, 3)
    return out


def _figures(rows: list[dict]) -> dict:
    falls = [o for o in rows if o["kind"] == "fall"]
    neg = [o for o in rows if o["kind"] != "fall"]
    lat = [o["latency_s"] for o in falls if "latency_s" in o]
    hours = sum(o["seconds"] for o in neg) / 3600.0
    false = int(sum(o["false"] for o in neg))
    fallen = int(sum(o.get("false_fallen", 0) for o in neg))
    still = int(sum(o.get("open_watches", 0) for o in neg))
    return {"recall": round(sum(o["detected"] for o in falls) / len(falls), 3) if falls else None,
            "falls": len(falls), "detected": int(sum(o["detected"] for o in falls)),
            "latency_median_s": round(float(np.median(lat)), 2) if lat else None,
            "latency_max_s": round(float(np.max(lat)), 2) if lat else None,
            "negative_clips": len(neg), "negative_hours": round(hours, 4), "false_alerts": false,
            "false_per_hour": round(false / hours, 2) if hours else None,
            "false_fallen": fallen, "false_fallen_per_hour": round(fallen / hours, 3) if hours else None,
            "open_watches": still,
            "false_fallen_bound_per_hour": round((fallen + still) / hours, 3) if hours else None,
            "false_before_fall": int(sum(o["false"] for o in falls))}


def summarise(outcomes: dict[str, dict]) -> dict:
    """Overall figures and ``by_dataset`` (see the module doc)."""
    rows = list(outcomes.values())
    by = {d: _figures([o for o in rows if o["dataset"] == d]) for d in DATASETS
          if any(o["dataset"] == d for o in rows)}
    source = {k: _figures([o for o in rows if o["dataset"] in v]) for k, v in SOURCES.items()
              if any(o["dataset"] in v for o in rows)}
    return {**_figures(rows), "by_source": source, "by_dataset": by}


def outcomes(clips: Sequence, scored: dict[str, list], classes: Sequence[str], threshold: float,
             consecutive: int, cooldown_s: float, confirm: Optional[Callable] = None,
             fallen: bool = True) -> dict[str, dict]:
    """:func:`clip_outcome` of every clip under one rule setting (``fallen``: simulate the
    still-down watch too)."""
    out = {}
    for c in clips:
        events = clip_events(scored[c.name], classes, threshold, consecutive, cooldown_s, confirm)
        out[c.name] = clip_outcome(c, events, *(clip_fallen(c, events) if fallen else ((), 0)))
    return out


def sweep(clips: Sequence, scored: dict[str, list], classes: Sequence[str], cooldown_s: float,
          thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
          consecutive: Sequence[int] = (1, 2, 3), confirm: Optional[Callable] = None) -> list[dict]:
    """:func:`summarise` for every (threshold, consecutive) rule setting (``fallen`` is
    simulated for the reported rules only: see :func:`outcomes`)."""
    return [{"threshold": thr, "consecutive": cons,
             **summarise(outcomes(clips, scored, classes, thr, cons, cooldown_s, confirm, fallen=False))}
            for thr in thresholds for cons in consecutive]


def recommend(rows: list[dict], slack: float = 0.05) -> dict:
    """The rule setting with the fewest false alerts (negative clips + before falls) among
    those within ``slack`` of the best recall (ties: the higher recall, the lower median
    latency, the lower threshold)."""
    best = max(r["recall"] or 0 for r in rows)
    ok = [r for r in rows if (r["recall"] or 0) >= best - slack]
    return min(ok, key=lambda r: (r["false_alerts"] + r["false_before_fall"], -(r["recall"] or 0),
                                  r["latency_median_s"] or 0, r["threshold"]))


def find_rule(rows: list[dict], rule: dict) -> Optional[dict]:
    """The sweep row of ``rule`` (``threshold``, ``consecutive``), if swept."""
    return next((r for r in rows if all(r[k] == v for k, v in rule.items())), None)


def table(rows: dict[str, dict]) -> str:
    """A markdown table of :func:`summarise` results keyed by a name (e.g. datasets)."""
    out = ["| | recall | latency median / max (s) | false `falling` / h (n in h) | false `fallen` / h (n) "
           "| watches open at a clip's end (bound / h) | before the fall |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        rec = f"{r['detected']}/{r['falls']} = {r['recall']}" if r["falls"] else "-"
        lat = f"{r['latency_median_s']} / {r['latency_max_s']}" if r["latency_median_s"] is not None else "-"
        fph = (f"{r['false_per_hour']} ({r['false_alerts']} in {r['negative_hours']:.3f} h)"
               if r["negative_clips"] else "-")
        ffh = (f"{r.get('false_fallen_per_hour')} ({r.get('false_fallen', 0)})" if r["negative_clips"]
               else "-")
        still = (f"{r.get('open_watches', 0)} ({r.get('false_fallen_bound_per_hour')})"
                 if r["negative_clips"] else "-")
        out.append(f"| {name} | {rec} | {lat} | {fph} | {ffh} | {still} | {r['false_before_fall']} |")
    return "\n".join(out)
