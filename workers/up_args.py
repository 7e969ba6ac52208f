"""Arguments of ``actionstream up`` (kept apart so the parser imports nothing heavy)."""

from __future__ import annotations

import argparse

from shared.posemodels import POSE_MODEL_NAMES


def add_up_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", default=[],
                   help="video file, RTSP/HTTP URL, webcam index or image folder (repeatable)")
    p.add_argument("--camera", action="append", default=[],
                   help="camera id for the --source at the same position (default: cam-1, cam-2, ...)")
    p.add_argument("--crop", action="append", default=[],
                   help="X,Y,W,H region; once for every source or once per source")
    p.add_argument("--config", help="YAML camera file (instead of --source)")
    p.add_argument("--pose-model", choices=POSE_MODEL_NAMES)
    p.add_argument("--action-model", help="ST-GCN ONNX with its model card")
    p.add_argument("--mode", choices=["live", "replay"], default="replay",
                   help="replay (default): nothing is dropped; live: latency first")
    p.add_argument("--fps", type=float, help="pace sources at this rate")
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
