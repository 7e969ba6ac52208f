"""ONNX export of an :class:`~workers.offline.stgcn.model.STGCN`, with its model card.

The exported graph has one input ``data`` ``(N, 3, T, V, M)`` float32 (N dynamic; T dynamic
when the card says ``dynamic_t``, and then any multiple of 4 works) and two outputs:
``logits`` ``(N, classes)`` (the original's ``forward``) and ``scores``
``(N, classes, T/4, V, M)`` (the original's ``extract_feature`` output, used for voting).
There is no ``Einsum`` in it. Right after writing, the file is run with onnxruntime (CPU)
at two input sizes and compared with PyTorch; a difference beyond the tolerance removes
the file and raises :class:`ExportError`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch
from torch import nn

from shared.errors import ActionstreamError
from workers.action.card import ModelCard, save_card
from workers.offline.stgcn.model import STGCN

log = logging.getLogger(__name__)

INPUT_NAME = "data"
OUTPUT_NAMES = ("logits", "scores")
MIN_OPSET = 12
# Allowed |onnx - torch| relative to max(1, max|torch|) of each output: float32 noise is
# ~1e-6 relative; the bugs an export can introduce (layout, partitions, pooling) are >1e-3.
CHECK_TOLERANCE = 1e-4
CHECK_SHORT_T = 16
# T of the example input when T is dynamic: small (the trace runs the model once) and
# unlike every other size in the graph, so no shape can be mistaken for a constant.
TRACE_T = 20


class ExportError(ActionstreamError, RuntimeError):
    """The export failed or the exported file does not reproduce PyTorch."""


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and measured."""

    model_path: Path
    card_path: Path
    seconds: float  # export + check
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # per output, worst check


class _LogitsAndScores(nn.Module):
    """(N, C, T, V, M) -> (logits (N, classes), scores (N, classes, T', V, M)), one backbone pass."""

    def __init__(self, model: STGCN) -> None:
        super().__init__()
        self.model = model

    def forward(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = data.shape[4]
        feat = self.model.backbone(data)
        return self.model.pool_logits(feat, m), self.model.position_scores(feat, m)


def check_card(model: STGCN, card: ModelCard) -> None:
    """Raise ValueError when the card does not describe ``model`` or the exported I/O."""
    cfg, problems = model.config, []
    if len(card.labels) != model.num_class:
        problems.append(f"card has {len(card.labels)} labels, the model {model.num_class} classes")
    if card.layout != cfg["layout"]:
        problems.append(f"card layout {card.layout!r}, model layout {cfg['layout']!r}")
    if card.window <= 0 or card.window % 4:
        problems.append(f"card window {card.window} is not a positive multiple of 4")
    if card.num_person < 1:
        problems.append(f"card num_person {card.num_person} < 1")
    if card.input_name != INPUT_NAME or tuple(card.outputs) != OUTPUT_NAMES:
        problems.append(f"card input/outputs {card.input_name!r}/{list(card.outputs)}, the "
                        f"export has {INPUT_NAME!r}/{list(OUTPUT_NAMES)}")
    if problems:
        raise ValueError("model card does not match the model: " + "; ".join(problems))


def export_onnx(model: STGCN, out_path: str | os.PathLike, card: ModelCard, opset: int = 17,
                *, metadata: Optional[Mapping[str, str]] = None,
                tolerance: float = CHECK_TOLERANCE) -> ExportResult:
    """Write ``model`` as ONNX to ``out_path`` and ``card`` beside it (``.json``).

    The example input is ``(1, C, T, V, card.num_person)`` (T = :data:`TRACE_T`, or the
    window for a fixed-T card); ``metadata`` goes into
    the ONNX ``metadata_props``. Raises ValueError (card/model mismatch, opset < 12) or
    :class:`ExportError` (export failed, or onnxruntime differs from PyTorch).
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old; ST-GCN needs >= {MIN_OPSET}")
    check_card(model, card)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        _export(model, out_path, card, opset)
        _annotate(out_path, model, card, metadata or {})
        diffs = verify_onnx(model, out_path, card, tolerance)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    finally:
        model.train(was_training)
    card_path = save_card(card, out_path)
    seconds = time.perf_counter() - start
    log.info("exported %s (%s, %d classes, opset %d) in %.1f s; max |onnx - torch| %s",
             out_path, card.layout, model.num_class, opset, seconds,
             ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return ExportResult(out_path, card_path, seconds, diffs)


def _export(model: STGCN, out_path: Path, card: ModelCard, opset: int) -> None:
    """The TorchScript-based exporter (the dynamo one needs onnxscript, not a dependency)."""
    t = TRACE_T if card.dynamic_t else card.window
    example = torch.zeros(1, model.in_channels, t, model.num_node, card.num_person)
    axes = {INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}, "scores": {0: "batch"}}
    if card.dynamic_t:
        axes[INPUT_NAME][2] = "time"
        axes["scores"][2] = "time_out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        try:
            torch.onnx.export(_LogitsAndScores(model), (example,), str(out_path), dynamo=False,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
        except Exception as exc:
            raise ExportError(f"ONNX export to {out_path} failed: "
                              f"{type(exc).__name__}: {exc}") from exc


def _annotate(out_path: Path, model: STGCN, card: ModelCard, extra: Mapping[str, str]) -> None:
    """Check the graph (valid, no Einsum) and store the model configuration as metadata."""
    import onnx

    proto = onnx.load(str(out_path))
    onnx.checker.check_model(proto)
    einsum = [n.name for n in proto.graph.node if n.op_type == "Einsum"]
    if einsum:
        raise ExportError(f"{out_path}: the graph has Einsum nodes {einsum}")
    props = {f"stgcn.{k}": str(v) for k, v in model.config.items()}
    props.update({"card.name": card.name, **{str(k): str(v) for k, v in extra.items()}})
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "actionstream"
    proto.doc_string = f"ST-GCN {card.name}: {INPUT_NAME} (N, 3, T, V, M) -> {OUTPUT_NAMES}"
    onnx.save(proto, str(out_path))


def check_inputs(model: STGCN, card: ModelCard) -> list[np.ndarray]:
    """Two random inputs (N, C, T, V, M): batch 1 at the window, batch 2 at a short T
    (or at the window again for a fixed-T export)."""
    rng = np.random.default_rng(0)
    short = CHECK_SHORT_T if card.dynamic_t else card.window
    shapes = [(1, card.window), (2, short)]
    return [(rng.standard_normal((n, model.in_channels, t, model.num_node, card.num_person))
             * 0.3).astype(np.float32) for n, t in shapes]


def verify_onnx(model: STGCN, path: str | os.PathLike, card: ModelCard,
                tolerance: float = CHECK_TOLERANCE) -> dict[str, float]:
    """Run ``path`` with onnxruntime (CPU) and ``model`` with PyTorch on :func:`check_inputs`;
    returns the worst max |Δ| per output, raises :class:`ExportError` beyond
    ``tolerance * max(1, max|torch|)``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    worst = {name: 0.0 for name in OUTPUT_NAMES}
    wrapper = _LogitsAndScores(model).eval()
    for x in check_inputs(model, card):
        with torch.no_grad():
            expected = [t.numpy() for t in wrapper(torch.from_numpy(x))]
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        for name, want, have in zip(OUTPUT_NAMES, expected, got):
            if want.shape != have.shape:
                raise ExportError(f"{path}: output {name!r} for input {x.shape} has shape "
                                  f"{have.shape}, PyTorch {want.shape}")
            diff = float(np.abs(want - have).max())
            limit = tolerance * max(1.0, float(np.abs(want).max()))
            if not diff <= limit:
                raise ExportError(f"{path}: output {name!r} for input {x.shape} differs from "
                                  f"PyTorch by {diff:.3g} (allowed {limit:.3g})")
            worst[name] = max(worst[name], diff)
    return worst
