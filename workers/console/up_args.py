"""Arguments of ``actionstream up`` (kept apart so the parser imports nothing heavy)."""

from __future__ import annotations

import argparse

from shared.posemodels import POSE_MODEL_NAMES

UP_DESCRIPTION = (
    "Run the whole pipeline on one machine, each stage its own process: a Redis server of its own "
    "(unless --redis or ACTIONSTREAM_REDIS_URL names one), a producer per camera, a pose worker, an "
    "action worker, the event history and the web page. File sources run to their end, then the "
    "outputs (--events-out, --skeletons-out, --annotate-out) are written and everything stops; "
    "Ctrl-C or SIGTERM stops it early and writes what was produced until then. Every output and "
    "model is checked before anything starts; a process that fails for good stops the run with "
    "its reason.")
UP_REDIS_HELP = ("use the Redis at this URL instead of starting one (default: ACTIONSTREAM_REDIS_URL "
                 "when set, else a server of up's own on a free loopback port, removed at the end); "
                 "rediss:// for TLS, user:password@ for ACL")


def add_up_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", default=[],
                   help="video file, RTSP/HTTP URL, webcam index or image folder (repeatable)")
    p.add_argument("--camera", action="append", default=[],
                   help="camera id for the --source at the same position (default: cam-1, cam-2, ...)")
    p.add_argument("--crop", action="append", default=[],
                   help="X,Y,W,H region; once for every source or once per source")
    p.add_argument("--config", help="YAML camera file (instead of --source)")
    p.add_argument("--skeletons", metavar="PATH", help="instead of --source: a Kinetics-skeleton JSON file "
                   "(as --skeletons-out writes it) or a folder of them, straight into the action stage "
                   "(no producer, no pose worker; --fps: the rate of files that give none, default the "
                   "action model's)")
    p.add_argument("--size", metavar="WxH", help="--skeletons: the frame in pixels of files that give no "
                   "width and height (default 340x256, Kinetics')")
    p.add_argument("--pose-model", choices=POSE_MODEL_NAMES,
                   help="the pose model (default: ACTIONSTREAM_POSE_MODEL, else movenet); its ONNX file "
                   "is found in ACTIONSTREAM_MODELS_DIR or ../shared/models")
    p.add_argument("--action-model", help="ST-GCN ONNX with its model card beside it (default: the "
                   "shipped fall model); loaded once before anything starts")
    p.add_argument("--mode", choices=["live", "replay"], default="replay",
                   help="replay (default): nothing is dropped; live: latency first")
    p.add_argument("--fps", type=float, help="read sources at this rate: frames are paced at it and "
                   "stamped at it (frame n at n/FPS s), so a clip read at another rate than its own "
                   "is slowed or sped up in time, and the action stage resamples it to the model's rate")
    p.add_argument("--width", type=int, help="resize frames to this width")
    p.add_argument("--events-out", help="write events as JSON lines to this file")
    p.add_argument("--skeletons-out", help="write each camera's tracks as Kinetics-skeleton JSON here")
    p.add_argument("--annotate-out", help="write the video with skeletons, track ids and labels (.mp4)")
    p.add_argument("--pose-only", action="store_true",
                   help="run no action stage: skeletons only (e.g. to build training data)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-web", action="store_true", help="do not serve the web page")
    p.add_argument("--no-history", action="store_true",
                   help="do not record the run's events in the event history (ACTIONSTREAM_HISTORY_URL)")
    p.add_argument("--archive", nargs="?", const="", metavar="DIR",
                   help="also run the archiver: the run's frames, skeletons and events kept in DIR "
                   "(default: ACTIONSTREAM_ARCHIVE_DIR, else <data dir>/archive); up ends once all is stored")
    p.add_argument("--web-port", type=int, default=8080,
                   help="the web page's port (default 8080; a free one when that is taken)")
    p.add_argument("--web-host", default="127.0.0.1", help="the web page's address (default 127.0.0.1)")
    p.add_argument("--metrics", action="store_true", help="each process serves Prometheus metrics on a "
                   "free port of its own, printed at the start (also when ACTIONSTREAM_METRICS_PORT is set)")
