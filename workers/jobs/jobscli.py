"""``actionstream replay submit|status|list|events|cancel|purge`` and ``actionstream jobs-worker``.

Only argparse at import (the command line stays light); each command imports what it needs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime
from typing import Callable

from workers.jobs.options import check_source, progress_bar, spec_from_args, status_line

log = logging.getLogger(__name__)

FOLLOW_POLL_S = 0.2


def add_job_commands(sub, common: Callable, metrics_arg: Callable) -> None:
    """The ``replay`` command (with its sub-commands) and ``jobs-worker`` on ``sub``."""
    p = sub.add_parser("replay", help="replay jobs (Celery): an archive or a video through the pipeline "
                       "as a camera of its own")
    actions = p.add_subparsers(dest="replay_command", required=True)
    s = actions.add_parser("submit", help="queue a replay job; prints its id")
    common(s)
    _replay_options(s)
    s.add_argument("--follow", "-f", action="store_true", help="then show its progress until it ends")
    s.set_defaults(func=cmd_submit)
    s = actions.add_parser("status", help="a job's state and progress")
    common(s)
    s.add_argument("job")
    s.add_argument("--follow", "-f", action="store_true", help="a progress bar until the job ends")
    s.add_argument("--json", action="store_true", help="one JSON line")
    s.set_defaults(func=cmd_status)
    s = actions.add_parser("list", help="every job, as a table")
    common(s)
    s.set_defaults(func=cmd_list)
    s = actions.add_parser("events", help="a job's events as JSON lines (the replay events stream)")
    common(s)
    s.add_argument("job")
    s.set_defaults(func=cmd_events)
    s = actions.add_parser("cancel", help="cancel a job (it stops within a second)")
    common(s)
    s.add_argument("job")
    s.set_defaults(func=cmd_cancel)
    text = ("delete what finished jobs left in Redis: their replay camera's keys (streams, state, "
            "leases), done marks, registry entries, Celery result and events: replay events, status "
            "and list then show nothing of it (no replay job JOB)")
    s = actions.add_parser("purge", help=text, description=text)
    common(s)
    s.add_argument("jobs", nargs="*", metavar="JOB", help="finished jobs (DONE, CANCELLED, FAILED); "
                   "a job still queued or running is refused: cancel it first")
    s.add_argument("--finished", action="store_true", help="every finished job")
    s.add_argument("--older-than", metavar="DURATION", help="with --finished: only jobs that ended at "
                   "least this long ago (30s, 15m, 2h, 7d, 1w)")
    s.set_defaults(func=cmd_purge)

    text = ("run one replay with nothing else running, e.g. of an archive left by `up --archive DIR`: "
            "its own Redis (unless --redis or ACTIONSTREAM_REDIS_URL), pose and action workers for its "
            "camera only, the job in this process; its events as JSON lines on stdout")
    s = actions.add_parser("run", help=text, description=text)
    common(s)
    _replay_options(s)
    s.add_argument("--archive", metavar="DIR", help="the archive to read (default: ACTIONSTREAM_ARCHIVE_DIR, "
                   "else <data dir>/archive)")
    s.add_argument("--pose-model", help="the pose model (default: ACTIONSTREAM_POSE_MODEL)")
    s.add_argument("--action-model", help="ST-GCN ONNX with its model card (default: the fall model)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_run)

    p = sub.add_parser("jobs-worker", help="run the Celery worker that runs replay jobs")
    common(p)
    p.add_argument("--concurrency", type=int, default=4, help="jobs run at once (threads; 4)")
    metrics_arg(p)
    p.set_defaults(func=cmd_jobs_worker)


def _replay_options(s) -> None:
    """What a replay reads, how fast and by which rules (``replay submit`` and ``replay run``)."""
    s.add_argument("--camera", help="the archived camera to replay (or the name of a --source replay)")
    s.add_argument("--source", metavar="PATH", help="a video file or a folder of videos (or of images) "
                   "instead of the archive; with --skeletons a Kinetics-skeleton JSON file or a folder "
                   "of them")
    s.add_argument("--start", help="archive: from this capture time (epoch seconds, or ISO 8601: UTC "
                   "unless a zone is given)")
    s.add_argument("--end", help="archive: until this capture time (excluded)")
    s.add_argument("--skeletons", action="store_true", help="replay the archived skeletons (or the "
                   "--source skeleton files) straight into the action stage (another model or rule, no pose)")
    s.add_argument("--speed", default="max", help="1: original speed, N: N times it, max: as fast as "
                   "the pipeline takes it (default)")
    s.add_argument("--fps", type=float, help="--source: stamp frames at this rate (default: the file's); "
                   "skeleton files: the rate of those that give no fps (default: the action model's)")
    s.add_argument("--size", metavar="WxH", help="skeleton files: the frame in pixels of those that give "
                   "no width and height (default 340x256, Kinetics')")
    s.add_argument("--threshold", type=float, help="alert threshold for this replay only")
    s.add_argument("--consecutive", type=int, help="consecutive windows for this replay only")


def _settings(args):
    from shared.settings import load_settings

    return load_settings(redis_url=args.redis, metrics_port=getattr(args, "metrics_port", None))


def _redis(settings):
    from shared.redisio import connect

    return connect(settings)


def submit(settings, spec, args=None) -> None:
    """Check the source (ReplayError: nothing queued), register the job, queue its task."""
    from workers.jobs import registry
    from workers.jobs.celery_app import QUEUE, REPLAY_TASK, make_app

    check_source(settings, spec, args)
    r = _redis(settings)
    registry.register(r, spec)
    make_app(settings).send_task(REPLAY_TASK, args=[spec.to_dict()], task_id=spec.job, queue=QUEUE)
    log.info("camera %s: replay job %s queued (%s, speed %s)", spec.replay_camera, spec.job,
             spec.describe(), spec.speed or "max")


def cmd_submit(args) -> int:
    settings = _settings(args)
    spec = spec_from_args(args)
    submit(settings, spec, args)
    print(spec.job, flush=True)
    return follow(settings, spec.job) if args.follow else 0


def cmd_run(args) -> int:
    from workers.jobs.local import run_local

    return run_local(args)


def job_status(settings, job: str, app=None) -> dict:
    """The job's spec, registry state and the task's progress, as one JSON-able dict."""
    from workers.jobs import registry
    from workers.jobs.celery_app import make_app

    r = _redis(settings)
    spec = registry.spec_of(r, job)
    doc = dict(registry.state_of(r, job), job=job, camera=spec.replay_camera, source=spec.describe(),
               target=spec.target, speed=spec.speed or "max")
    result = (app or make_app(settings)).AsyncResult(job)
    info = result.info if result.state == "PROGRESS" else None
    if isinstance(info, dict):
        doc.update(progress=info)
    elif isinstance(result.info, dict) and result.state == "SUCCESS":
        doc.update(progress={"done": result.info.get("published"), "total": doc.get("total"), "eta_s": 0})
    doc["task"] = result.state
    return doc


def cmd_status(args) -> int:
    settings = _settings(args)
    if args.follow:
        return follow(settings, args.job)
    doc = job_status(settings, args.job)
    print(json.dumps(doc) if args.json else status_line(doc))
    return 0


def follow(settings, job: str, out=None) -> int:
    """A tqdm progress bar (stderr) until the job ends; then its status line. 0 when DONE."""
    out = out or sys.stdout  # looked up now: a test's captured stdout, not the one at import

    from workers.jobs import registry
    from workers.jobs.celery_app import make_app

    app = make_app(settings)
    doc = job_status(settings, job, app)
    with progress_bar(f"replay {job}", (doc.get("progress") or {}).get("done") or 0) as bar:
        while True:
            prog = doc.get("progress") or {}
            bar.show(prog, doc.get("total"), f"{doc['state']} {prog.get('phase', '')}".strip())
            if registry.is_final(doc["state"]):
                break
            time.sleep(FOLLOW_POLL_S)
            doc = job_status(settings, job, app)
    print(status_line(doc), file=out, flush=True)
    return 0 if doc["state"] == "DONE" else 1


def cmd_list(args) -> int:
    from workers.jobs import registry

    settings = _settings(args)
    rows = [("JOB", "CAMERA", "SOURCE", "INTO", "SPEED", "STATE", "CREATED")]
    for spec, state in registry.jobs(_redis(settings)):
        created = datetime.fromtimestamp(spec.created).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((spec.job, spec.replay_camera, spec.describe(), spec.target, str(spec.speed or "max"),
                     state.get("state", "?"), created))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_events(args, out=None) -> int:
    from shared import keys
    from workers.jobs import registry

    out = out or sys.stdout
    r = _redis(_settings(args))
    camera = registry.spec_of(r, args.job).replay_camera
    for _, fields in r.xrange(keys.REPLAY_EVENTS_STREAM):
        raw = fields.get(b"event", b"{}").decode()
        if json.loads(raw).get("camera") == camera:
            print(raw, file=out)
    return 0


def cmd_cancel(args, wait_s: float = 3.0) -> int:
    from workers.jobs import registry
    from workers.jobs.celery_app import make_app

    settings = _settings(args)
    r = _redis(settings)
    spec = registry.spec_of(r, args.job)
    state = registry.request_cancel(r, spec)
    make_app(settings).control.revoke(spec.job)  # a worker that has not started it drops it
    deadline = time.monotonic() + wait_s
    while not registry.is_final(state) and time.monotonic() < deadline:
        time.sleep(0.05)
        state = registry.state_of(r, spec.job)["state"]
    print(f"job {spec.job}: {state if registry.is_final(state) else 'cancel requested (' + state + ')'}")
    return 0


def purge_targets(r, args, clock=time.time) -> list[str]:
    """The job ids ``replay purge`` names: JOB ... or ``--finished [--older-than D]``."""
    from workers.jobs import purge, registry
    from workers.jobs.replay import ReplayError

    if args.older_than is not None and not args.finished:
        raise ReplayError("--older-than selects among --finished jobs; give --finished too")
    if bool(args.jobs) == bool(args.finished):
        raise ReplayError("replay purge: give JOB ids or --finished (not both)")
    if args.jobs:
        return list(args.jobs)
    older = None if args.older_than is None else purge.parse_duration(args.older_than)
    return purge.select_finished(registry.jobs(r), clock(), older)


def cmd_purge(args, out=None) -> int:
    """Check every job named first (nothing purged if one is unknown or not finished), then
    purge each and print what was removed."""
    from workers.jobs import purge
    from workers.jobs.celery_app import make_app

    out = out or sys.stdout
    settings = _settings(args)
    r = _redis(settings)
    specs = purge.check_purgeable(r, purge_targets(r, args))
    if not specs:
        print("no finished job to purge", file=out)
        return 0
    backend = make_app(settings).backend  # the task's progress and result (Celery's own Redis)
    for spec in specs:
        lines = purge.purge(r, spec).lines()
        result = backend.get_key_for_task(spec.job)
        if backend.client.delete(result):
            lines.append(f"  {result.decode()} (its Celery result)")
        print("\n".join(lines), file=out, flush=True)
    return 0


def cmd_jobs_worker(args) -> int:
    """A Celery worker (threads) for replay jobs, as ``celery -A workers.jobs.celery_app worker -Q
    actionstream-jobs``."""
    import os
    import signal
    import socket

    from shared import metrics
    from workers.jobs.celery_app import QUEUE, make_app

    from shared.heartbeat import Beater
    from workers.jobs.housekeeping import Housekeeper

    settings = _settings(args)
    url = metrics.serve(settings.metrics_port, settings.metrics_host)
    name = f"jobs-{os.getpid()}"
    argv = ["worker", "-Q", QUEUE, "--pool", "threads", "--concurrency", str(args.concurrency),
            "--hostname", f"{name}@{socket.gethostname()}", "--without-gossip",
            "--without-mingle", "--loglevel", logging.getLevelName(logging.getLogger().getEffectiveLevel())]
    # until Celery installs its own handler, a SIGTERM still runs the finally below (Python's
    # default would end the process at once and leave the heartbeat listed for a TTL)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # a heartbeat, as every worker's: `actionstream status` lists it
    beater = Beater(_redis(settings), name, "jobs", {"concurrency": args.concurrency, "metrics_url": url},
                    settings.lease_ttl_s).start()
    app = make_app(settings)
    # the housekeeping timer (purges finished replays, trims dead letters, drops dead consumers)
    keeper = Housekeeper(_redis(settings), settings, name, backend=app.backend).start()
    try:
        app.worker_main(argv)
    finally:
        keeper.stop()
        beater.stop()
    return 0


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)
