"""``actionstream replay run``: one replay job with nothing else running.

For an archive left by ``actionstream up --archive DIR`` once ``up`` (and the Redis it
started) has ended, or any archive or video, on a machine with no long-lived Redis, no
jobs worker, no pose or action worker: it starts a Redis of its own (unless ``--redis`` or
``ACTIONSTREAM_REDIS_URL`` names one), a pose worker (frames only) and an action worker
that serve the replay camera alone (``--cameras``, so a shared Redis's live cameras are left
to their own workers), runs the job in this process (:class:`workers.jobs.runner.JobRunner`,
as a jobs worker would), prints its events as JSON lines on stdout and stops what it
started. Exit 0 when the job is DONE, 1 when it FAILED (a stage that failed for good too),
2 for bad input (nothing started).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Optional

from shared import keys
from shared.redisio import connect, redact

log = logging.getLogger(__name__)

CHECK_STAGES_EVERY_S = 0.5


def _check_models(settings, spec) -> None:
    """The models the stages will load, found before anything starts (ModelNotFound, CardError)."""
    from shared.modelpaths import resolve_action_model, resolve_pose_model
    from workers.action.card import load_card
    from workers.inference.sessions import default_action_model, require_onnxruntime

    require_onnxruntime()
    if spec.target == keys.POSE_GROUP:
        resolve_pose_model(settings.pose_model, settings)
    load_card(resolve_action_model(settings, default_action_model()))


def stage_specs(spec, settings, action_model: Optional[str]) -> list:
    """The stages the replay feeds, each owning only the replay camera and ending after it."""
    from shared.supervisor import ProcSpec

    common = ["--cameras", spec.replay_camera, "--mode", "replay", "--exit-on-eos"]
    specs = []
    if spec.target == keys.POSE_GROUP:
        specs.append(ProcSpec("pose-worker", ["pose-worker", *common, "--pose-model", settings.pose_model]))
    action = ["action-worker", *common] + (["--action-model", action_model] if action_model else [])
    return specs + [ProcSpec("action-worker", action)]


class StagesWatch:
    """The runner's ``stopping`` hook: polls the stages (restarting a crashed one) every
    half second; true once one has failed for good (the job cannot end then)."""

    def __init__(self, sup) -> None:
        self.sup, self._next = sup, 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + CHECK_STAGES_EVERY_S
            self.sup.poll()
        return bool(self.sup.failed())

    def reason(self) -> str:
        return "; ".join(f"{c.spec.name} failed (exit codes {c.history})" for c in self.sup.failed())


def _progress_bar(job: str, disable: bool):
    from workers.jobs.options import progress_bar

    bar = progress_bar(f"replay {job}", disable=disable)
    return bar, lambda meta: bar.show(meta, None, meta.get("phase", ""))


def replay_events(r, camera: str) -> list[str]:
    """The replay camera's events (JSON) in the replay events stream, oldest first."""
    raw = (fields.get(b"event", b"{}").decode() for _, fields in r.xrange(keys.REPLAY_EVENTS_STREAM))
    return [e for e in raw if json.loads(e).get("camera") == camera]


def _run_job(r, settings, spec, sup, no_progress: bool) -> tuple[str, dict]:
    """Run the job against the started stages: (final state, its summary)."""
    from workers.jobs import registry
    from workers.jobs.replay import ReplayFailed
    from workers.jobs.runner import JobRunner, Stopping

    registry.register(r, spec)
    watch = StagesWatch(sup)
    bar, report = _progress_bar(spec.job, no_progress)
    runner = JobRunner(r, settings, spec, report, stopping=watch)
    try:
        sup.start()
        summary = runner.run()
    except ReplayFailed:
        summary = runner.summary()
    except Stopping:  # a stage failed for good: the job cannot end
        registry.set_state(r, spec.job, "FAILED", reason=watch.reason())
        summary = runner.summary()
    except KeyboardInterrupt:
        registry.set_state(r, spec.job, "CANCELLED", reason="interrupted")
        raise
    finally:
        bar.close()
    return summary["state"], summary


def run_local(args) -> int:
    """``replay run``: check the input, start Redis (unless given) and the stages, run the
    job, print its events; everything started is stopped however it ends."""
    from shared.redis_server import RedisServer
    from shared.settings import load_settings
    from workers.jobs.options import check_source, spec_from_args, status_line
    from shared.supervisor import Supervisor, child_env

    if args.archive and args.source:
        from workers.jobs.replay import ReplayError

        raise ReplayError("--archive names the archive of --camera; --source replays a video")
    settings = load_settings(redis_url=args.redis, archive_dir=args.archive, pose_model=args.pose_model,
                             action_model=args.action_model)
    spec = spec_from_args(args)
    check_source(settings, spec, args)  # bad input: one line, exit code 2, nothing started
    _check_models(settings, spec)
    server = None if settings.redis_url else RedisServer().start()
    url = settings.redis_url or server.url
    log.info("camera %s: replay %s (%s) on redis %s", spec.replay_camera, spec.job, spec.describe(),
             redact(url))
    extra = {"ACTIONSTREAM_LOG_LEVEL": args.log_level} if args.log_level else {}
    sup = Supervisor(stage_specs(spec, settings, args.action_model), child_env(url, extra))
    r = connect(url)
    try:
        state, summary = _run_job(r, settings, spec, sup, args.no_progress)
        for event in replay_events(r, spec.replay_camera):
            print(event, flush=True)
    finally:
        sup.stop()
        r.close()
        if server is not None:
            server.cleanup()
    doc = dict(summary, source=spec.describe(), target=spec.target, speed=spec.speed or "max",
               progress={"done": summary.get("published"), "total": summary.get("total")})
    print(status_line(doc), file=sys.stderr, flush=True)
    return 0 if state == "DONE" else 1
