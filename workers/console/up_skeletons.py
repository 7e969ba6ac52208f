"""``actionstream up --skeletons PATH``: skeleton files straight into the action stage.

A quick look at what the action stage makes of Kinetics-skeleton JSON (``up --skeletons-out``
and ``archive export`` write it; ST-GCN is trained on it), with no producer and no pose
worker: the embedded Redis (unless ``--redis``), one action worker, the event history and
the web page as ``up`` runs them, and the file(s) published by the replay job's own runner
(:class:`workers.jobs.runner.JobRunner` with the ``skeletons`` source of
:mod:`workers.jobs.skeleton_files`) in this process: the same frames, pace (as fast as the
action stage takes them), end of stream and bad-file lines as ``replay submit --source PATH
--skeletons``. The camera is ``--camera``, else the file's ``camera``, else its name; its
events are ordinary events of that camera (the events stream, the history, ``--events-out``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
import uuid
from pathlib import Path
from typing import Optional

from shared import keys
from shared.redis_server import RedisServer
from shared.redisio import connect, redact
from shared.settings import SettingsError, load_settings
from workers.console.exports import Collector, events_stream_end, write_events, write_skeletons
from shared.supervisor import ProcSpec, Supervisor, child_env
from workers.console.up import Terminated, _drain_history, _start_history, _start_web, _stop_all, _terminate

log = logging.getLogger(__name__)

POLL_EVERY_S = 0.2
# options of `up` that feed or shape frames: no meaning without a producer and a pose worker
FRAME_OPTIONS = (("source", "--source"), ("config", "--config"), ("crop", "--crop"), ("width", "--width"),
                 ("pose_model", "--pose-model"), ("pose_only", "--pose-only"),
                 ("annotate_out", "--annotate-out"), ("archive", "--archive"))


def check_args(args) -> None:
    """SettingsError (one line, exit code 2) for options that need frames, or several cameras."""
    given = [flag for name, flag in FRAME_OPTIONS if getattr(args, name, None) not in (None, [], False)]
    if given:
        raise SettingsError(f"--skeletons replays skeleton files into the action stage (no producer, no pose "
                            f"worker); {', '.join(given)} cannot go with it")
    if len(args.camera) > 1:
        raise SettingsError(f"--skeletons is one camera; {len(args.camera)} --camera ids given")


def make_spec(args, settings):
    """The replay job that publishes the file(s): a JobSpec of the ``skeletons`` source."""
    from workers.jobs.skeleton_files import skeleton_spec

    now = time.time()
    ns = argparse.Namespace(source=args.skeletons, camera=args.camera[0] if args.camera else None,
                            fps=args.fps, size=args.size, action_model=settings.action_model)
    return skeleton_spec(ns, dict(job=uuid.uuid4().hex[:10], speed=0.0, created=now), now)


def _check_inputs(spec, settings) -> int:
    """The files, the action model and the Redis given, before anything starts; frames to replay."""
    from shared.modelpaths import resolve_action_model
    from workers.action.card import load_card
    from workers.jobs.skeleton_files import check_skeletons
    from workers.inference.sessions import default_action_model, require_onnxruntime

    total = check_skeletons(spec, warn=False)  # its bad files are named as the run reads them
    require_onnxruntime()
    load_card(resolve_action_model(settings, default_action_model()))
    if settings.redis_url is not None:
        connect(settings.redis_url).ping()
    return total


def _reset(r, camera: str) -> None:
    """The camera afresh: its skeleton and score streams, state, replay checkpoint, done marks."""
    pipe = r.pipeline(transaction=False)
    for key in (keys.skeletons_stream(camera), keys.scores_stream(camera), keys.action_state_key(camera),
                keys.job_checkpoint_key(camera), keys.job_cancel_key(camera)):
        pipe.delete(key)
    for stage in (keys.POSE_GROUP, keys.ACTION_GROUP):
        pipe.hdel(keys.done_key(stage), camera)
    pipe.execute()


class Watch:
    """The runner's hooks: ``report`` moves the progress bar, ``stopping`` reads the collector
    and polls the action worker (restarting it when it crashed) every POLL_EVERY_S; true once
    it failed for good (the replay cannot end then)."""

    def __init__(self, sup: Supervisor, collector: Collector, bar) -> None:
        self.sup, self.collector, self.bar, self._next = sup, collector, bar, 0.0

    def report(self, meta: dict) -> None:
        self.bar.update(self.collector.frames_done() - self.bar.n)

    def stopping(self) -> bool:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + POLL_EVERY_S
            self.collector.poll(block_ms=None)
            self.sup.poll()
        return bool(self.sup.failed())


def _replay(r, settings, spec, sup: Supervisor, collector: Collector, total: int, quiet: bool) -> str:
    """Publish the files and wait until the action stage has finished them: the final state."""
    from tqdm import tqdm

    from workers.jobs.replay import ReplayFailed
    from workers.jobs.runner import JobRunner, Stopping

    bar = tqdm(total=total or None, unit="frame", desc="frames through the pipeline", disable=quiet,
               dynamic_ncols=True)
    watch = Watch(sup, collector, bar)
    runner = JobRunner(r, settings, spec, watch.report, stopping=watch.stopping, camera=spec.camera)
    try:
        state = runner.run()["state"]
    except ReplayFailed as exc:
        log.error("up: the skeleton replay failed: %s", exc)
        return "FAILED"
    except Stopping:
        for child in sup.failed():
            log.error("up: %s failed (exit codes %s)", child.spec.name, child.history)
        return "FAILED"
    finally:
        r.hdel(keys.JOB_STATES_KEY, spec.job)  # the job is this run's own: nothing for `replay list`
        collector.drain()
        bar.update(collector.frames_done() - bar.n)
        bar.close()
    return state


def run_up_skeletons(args) -> int:
    """``up --skeletons PATH``: check, start Redis (unless given), the history and web page
    as ``up`` does, one action worker; publish the files; write the outputs; stop it all."""
    check_args(args)
    settings = load_settings(redis_url=args.redis, mode="replay", action_model=args.action_model)
    spec = make_spec(args, settings)
    total = _check_inputs(spec, settings)
    camera = spec.camera
    server: Optional[RedisServer] = None if settings.redis_url else RedisServer().start()
    url = settings.redis_url or server.url
    log.info("up: skeletons %s as camera %s into the action stage, redis %s", spec.path, camera, redact(url))
    env = child_env(url, {"ACTIONSTREAM_LOG_LEVEL": args.log_level} if args.log_level else {})
    action = ["action-worker", "--cameras", camera, "--mode", "replay", "--exit-on-eos"]
    sup = Supervisor([ProcSpec("action-worker", action + (["--action-model", args.action_model]
                                                          if args.action_model else []))], env)
    web = history = collector = None
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        web = _start_web(args, env)
        history = _start_history(args, settings, env)
        r = connect(url)
        collector = Collector(r, [camera], bool(args.skeletons_out), events_stream_end(r))
        _reset(r, camera)
        sup.start()
        if _replay(r, settings, spec, sup, collector, total, args.no_progress) != "DONE":
            return 1
        _drain_history(r, history, len(collector.events))
        _write_outputs(args, collector)
        n = collector.frames_done()
        log.info("up: %d skeleton frames through the action stage in %.1f s, %d events", n,
                 time.monotonic() - t0, len(collector.events))
        return 0
    except (KeyboardInterrupt, Terminated) as exc:
        log.warning("up: %s; stopping", "terminated" if isinstance(exc, Terminated) else "interrupted")
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_all(sup, [web, history], server, collector, None)


def _write_outputs(args, collector: Collector) -> None:
    if args.events_out:
        write_events(collector.events, args.events_out)
        log.info("up: %d events written to %s", len(collector.events), args.events_out)
    if args.skeletons_out:
        paths = write_skeletons(collector, Path(args.skeletons_out))
        log.info("up: skeletons written to %s", ", ".join(map(str, paths)))
