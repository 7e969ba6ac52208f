"""onnxruntime sessions: providers from settings, CUDA first where present, CPU always."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from shared.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
INSTALL_HINT = ("no onnxruntime is installed: pip install 'actionstream[cpu]' (CPU) or "
                "'actionstream[gpu]' (CUDA), one of the two")


def default_action_model() -> Path:
    """The fall model shipped inside the package (``workers/action/models/fall.onnx``)."""
    return Path(__file__).resolve().parents[1] / "action" / "models" / "fall.onnx"


def installed_runtimes() -> list[str]:
    """The onnxruntime distributions installed (both provide the ``onnxruntime`` module)."""
    from importlib import metadata

    found = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(dist)
            found.append(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def require_onnxruntime() -> None:
    """ModelError with the command to run when no onnxruntime is installed, or when both
    builds are (they share one module: one silently overwrites the other's files)."""
    import importlib.util

    try:
        missing = importlib.util.find_spec("onnxruntime") is None
    except ImportError:
        missing = True
    if missing:
        raise ModelError(INSTALL_HINT)
    if len(installed_runtimes()) > 1:
        raise ModelError("both onnxruntime and onnxruntime-gpu are installed and they conflict: "
                         "pip uninstall -y onnxruntime onnxruntime-gpu, then pip install "
                         "'actionstream[gpu]' (or '[cpu]'), one of the two")


class ModelError(UserError, RuntimeError):
    """A model file is missing, unreadable, or not the shape actionstream expects."""


def create_session(path: str | os.PathLike, providers: Sequence[str] = DEFAULT_PROVIDERS,
                   threads: int = 0, spin: bool = True):
    """An ``InferenceSession`` on the first available of ``providers`` (CPU is always added).

    ``threads`` = 0 lets onnxruntime choose. ``spin`` = False: idle intra-op threads sleep
    instead of spinning (they leave the CPU to the process's other threads). Raises
    :class:`ModelError` naming the file.
    """
    require_onnxruntime()
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelError(f"model file {path} cannot be loaded: {exc}") from exc
    log.info("loaded %s on %s", path.name, session.get_providers()[0])
    return session
