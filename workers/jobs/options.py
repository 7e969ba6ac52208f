"""What ``replay submit`` and ``replay run`` share: the job's spec from the command-line options,
the check that its source holds something, and how a job's progress is shown."""

from __future__ import annotations

import re
import sys
import time
import uuid
from pathlib import Path
from typing import Optional


def parse_speed(text: str) -> float:
    from workers.jobs.replay import ReplayError

    if text.lower() == "max":
        return 0.0
    try:
        speed = float(text.lower().rstrip("x"))
    except ValueError:
        speed = -1.0
    if not speed > 0:
        raise ReplayError(f"--speed {text!r}: give a factor above 0 (1 = original speed) or 'max'")
    return speed


def _time(text: Optional[str], option: str) -> Optional[float]:
    """Epoch seconds or ISO 8601 (UTC when it names no zone), as ``archive export`` reads them."""
    from workers.archive.skeleton_export import parse_time

    return None if text is None else parse_time(text, option)


def _video_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", Path(path).stem or "video").lstrip("-_.")[:48] or "video"


def spec_from_args(args, clock=time.time):
    """The job's :class:`JobSpec` from the submit options (ReplayError when they do not fit)."""
    from workers.jobs.replay import JobSpec, ReplayError

    if not args.source and not args.camera:
        raise ReplayError("give --camera CAM (its archive) or --source PATH (a video or a folder)")
    if args.source and (args.start or args.end):
        raise ReplayError("--start and --end replay the archive; --source replays a video or skeleton files")
    if getattr(args, "size", None) and not (args.source and args.skeletons):
        raise ReplayError("--size is the frame of --source skeleton files (with --skeletons)")
    now = clock()
    common = dict(job=uuid.uuid4().hex[:10], speed=parse_speed(args.speed), threshold=args.threshold,
                  consecutive=args.consecutive, created=now)
    if args.source and args.skeletons:
        from workers.jobs.skeleton_files import skeleton_spec

        return skeleton_spec(args, common, now)
    if args.source:
        return JobSpec(camera=args.camera or _video_name(args.source), source="video",
                       target="pose", path=str(Path(args.source).resolve()), fps=args.fps, t0=now, **common)
    start, end = _time(args.start, "--start"), _time(args.end, "--end")
    if start is not None and end is not None and start >= end:  # the times as typed, not epochs
        raise ReplayError(f"--start {args.start} is not before --end {args.end}")
    return JobSpec(camera=args.camera, source="archive", target="action" if args.skeletons else "pose",
                   start_ts=start, end_ts=end, **common)


def check_source(settings, spec, args=None) -> None:
    """ReplayError when the job's source has nothing to replay (``args``: the times as typed)."""
    from workers.jobs import replay_sources as sources

    if spec.source == "archive":
        sources.check_archive(sources.open_reader(settings), spec, getattr(args, "start", None),
                              getattr(args, "end", None))
    elif spec.source == "skeletons":  # a bad file: one line each, the job goes on with the others
        from workers.jobs.skeleton_files import check_skeletons

        check_skeletons(spec)
    else:
        sources.check_videos(spec)


def status_line(doc: dict) -> str:
    prog = doc.get("progress") or {}
    done, total = prog.get("done"), prog.get("total") or doc.get("total")
    parts = [f"job {doc['job']}: {doc['state']}", f"camera {doc['camera']}", doc["source"],
             f"into {doc['target']}", f"speed {doc['speed']}"]
    if done is not None:
        eta = f", eta {prog['eta_s']:.0f} s" if prog.get("eta_s") else ""
        parts.append(f"{done}/{total or '?'} items{eta}")
    if "events" in doc:
        parts.append(f"{doc['events']} events")
    if doc.get("reason"):
        parts.append(f"({doc['reason']})")
    return ", ".join(parts)


def progress_bar(desc: str, initial: int = 0, disable: bool = False):
    """A tqdm bar on stderr whose rate (and so its time left) is the job's own, its PROGRESS
    meta's ``rate`` (:meth:`workers.jobs.replay.Progress.rate`, the worker's clock) once it
    has one: not one measured between polls of the result backend, nor the items done before
    the bar started counted as done in its first instant (``initial``)."""
    from tqdm import tqdm

    class JobBar(tqdm):
        job_rate: Optional[float] = None

        @property
        def format_dict(self):
            doc = super().format_dict
            if self.job_rate:
                doc["rate"] = self.job_rate
            return doc

        def show(self, prog: dict, total: Optional[int], postfix: str) -> None:
            self.total = prog.get("total") or total or self.total
            self.job_rate = prog.get("rate") or self.job_rate
            self.update(max(0, (prog.get("done") or 0) - self.n))
            self.set_postfix_str(postfix, refresh=False)
            self.refresh()

    return JobBar(desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True, initial=initial,
                  disable=disable)
