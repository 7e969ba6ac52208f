"""Logging setup for every actionstream process (one logger per module elsewhere)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO", name: str = "") -> None:
    fmt = "%(asctime)s %(levelname)-7s " + (f"[{name}] " if name else "") + "%(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    logging.getLogger("onnxruntime").setLevel(logging.WARNING)
