"""ST-GCN (yysijie/st-gcn re-implemented): graph, PyTorch model, checkpoint loading, ONNX export.

PyTorch is an optional extra (``actionstream[train]``): importing this package does not
import it; the torch-based names below are loaded on first use. ``graph`` and ``data``
need numpy only. The action worker itself runs the exported ONNX with onnxruntime.

Public API::

    from workers.action.stgcn import Graph, STGCN, build_model, load_checkpoint, export_onnx
    from workers.action.stgcn.data import read_kinetics_json
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from workers.action.stgcn.graph import Graph

log = logging.getLogger(__name__)

_LAZY = {
    "STGCN": "model", "STGCNBlock": "model", "ConvTemporalGraphical": "model",
    "build_model": "model",
    "load_checkpoint": "checkpoint", "read_state_dict": "checkpoint",
    "CheckpointError": "checkpoint",
    "export_onnx": "export", "ExportError": "export", "ExportResult": "export",
    "read_kinetics_json": "data",
}

__all__ = ["Graph", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
