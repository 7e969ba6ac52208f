"""Export a :class:`~.network.MobilenetThin` to ONNX in ``mobilenet_thin.onnx``'s I/O layout.

Input ``image`` float32 NHWC ``(batch, height, width, 3)`` BGR 0..255; output
``Openpose/concat_stage7`` float32 ``(batch, height_div8, width_div8, 57)``, all three leading
dims dynamic, so ``load_pose_model("mobilenet_thin", path)`` accepts it like the upstream file.
The TF 'SAME' padding is traced from the input size, so odd sizes stay exact.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from shared.errors import ActionstreamError
from workers.offline.posetrain.finetune.network import MobilenetThin, NHWCWrapper

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "Openpose/concat_stage7"
OPSET = 17


class ExportError(ActionstreamError, RuntimeError):
    """The ONNX export failed or its output differs from PyTorch's."""


def export_onnx(net: MobilenetThin, out_path: str | Path, example_size: tuple[int, int] = (216, 184),
                check: bool = True) -> Path:
    """Write ``net`` to ``out_path`` (NHWC in/out); ``example_size`` = (W, H) used for tracing.

    With ``check``, runs the file in onnxruntime on a random image at another, odd size and
    raises :class:`ExportError` when it differs from PyTorch by more than 1e-3.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = NHWCWrapper(net).eval()
    w, h = example_size
    example = torch.zeros(1, h, w, 3)
    axes = {INPUT_NAME: {0: "batch", 1: "height", 2: "width"},
            OUTPUT_NAME: {0: "batch", 1: "height_div8", 2: "width_div8"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy exporter deprecation / tracer notices
        try:
            torch.onnx.export(wrapper, (example,), str(out_path), dynamo=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
        except Exception as exc:
            raise ExportError(f"ONNX export to {out_path} failed: {type(exc).__name__}: {exc}") from exc
    if check:
        check_export(wrapper, out_path)
    log.info("exported mobilenet_thin to %s", out_path)
    return out_path


def check_export(wrapper: NHWCWrapper, path: Path, size: tuple[int, int] = (123, 77)) -> float:
    """Max abs difference ONNX vs PyTorch on a random BGR image of ``size`` (W, H)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1, size[1], size[0], 3)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ref = wrapper(torch.from_numpy(x)).numpy()
    if got.shape != ref.shape:
        raise ExportError(f"exported model gives {got.shape}, PyTorch {ref.shape}")
    diff = float(np.abs(got - ref).max())
    if diff > 1e-3:
        raise ExportError(f"exported model differs from PyTorch by {diff:.3g}")
    return diff
