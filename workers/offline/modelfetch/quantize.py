"""``actionstream models quantize``: MoveNet MultiPose in 8-bit integers (``movenet_int8``).

Static quantization with onnxruntime's tools, QDQ format: every convolution's weights per
output channel (int8) and its input activations (uint8), with scales calibrated (min/max)
on frames of real videos prepared exactly as the pose worker prepares them (the MoveNet
adapter's letterbox). Two groups of convolutions stay in float, because quantizing them
costs the most accuracy: the first ``float_first`` of the backbone (the image's raw
contrast) and the heads (the last convolution of each output branch: the person score,
the keypoints and their offsets). On a CPU with 8-bit dot products (AVX-512 VNNI, AMX)
onnxruntime runs the quantized convolutions faster; elsewhere it may not gain.

The result is reproducible from the same float model, calibration frames and options; a
JSON beside it records them (and their sha256).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np

from shared.errors import UserError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
FLOAT_FIRST = 6  # backbone convolutions kept in float (measured: docs/models.md, "INT8")


class QuantizeError(UserError, ValueError):
    """Calibration videos missing or unreadable, or a source model that is not MoveNet."""


def calibration_videos(paths: Iterable[str | Path]) -> list[Path]:
    """The videos of ``paths`` (files, or folders searched one level deep), in name order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise QuantizeError(f"calibration video or folder {p} does not exist")
    if not out:
        raise QuantizeError("no calibration videos: give --calibration with videos of your cameras")
    return out


def calibration_tensors(model, videos: Sequence[Path], per_video: int = 4,
                        size: Optional[tuple[int, int]] = None) -> list[np.ndarray]:
    """``per_video`` frames spread over each video, through ``model.prepare`` (the worker's
    preprocessing); only those of the most common tensor shape (calibration needs one shape)."""
    tensors = []
    for path in videos:
        cap = cv2.VideoCapture(str(path))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for k in range(per_video):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(n * (k + 0.5) / per_video))
            ok, image = cap.read()
            if ok:
                tensors.append(model.prepare(image).tensor)
        cap.release()
    if not tensors:
        raise QuantizeError(f"none of the {len(videos)} calibration videos gave a frame")
    shapes = [t.shape for t in tensors]
    common = max(set(shapes), key=shapes.count) if size is None else (1, size[1], size[0], 3)
    return [t for t in tensors if t.shape == common]


def float_convolutions(model_path: Path, first: int) -> list[str]:
    """The convolutions left in float: the first ``first`` in graph order, and the heads
    (convolutions with no convolution after them)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    convs = [n for n in graph.node if n.op_type == "Conv"]

    def feeds_a_conv(node) -> bool:
        seen, todo = set(), list(node.output)
        while todo:
            for nxt in consumers.get(todo.pop(), ()):
                if nxt.op_type == "Conv":
                    return True
                if nxt.name not in seen:
                    seen.add(nxt.name)
                    todo.extend(nxt.output)
        return False

    heads = [n.name for n in convs if not feeds_a_conv(n)]
    return list(dict.fromkeys([n.name for n in convs[:first]] + heads))


def quantize_movenet(source: Path, out: Path, tensors: list[np.ndarray],
                     float_first: int = FLOAT_FIRST) -> dict:
    """Write the INT8 model ``out`` from the float ``source``; returns what was done."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(tensors)

        def get_next(self):
            t = next(self.it, None)
            return None if t is None else {input_name: t}

    import onnx

    input_name = onnx.load(str(source)).graph.input[0].name
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        kept = float_convolutions(pre, float_first)
        partial = Path(tmp) / out.name
        quantize_static(str(pre), str(partial), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=kept,
                        # 7-bit weights: x86 CPUs without VNNI (AVX2 only) saturate 8-bit u8 x s8
                        # products; the full range lost most keypoints there (test_quantize)
                        calibrate_method=CalibrationMethod.MinMax, reduce_range=True)
        partial.replace(out)
    return {"source": source.name, "source_sha256": _sha256(source), "sha256": _sha256(out),
            "calibration_frames": len(tensors), "input_shape": list(tensors[0].shape),
            "float_first": float_first, "kept_in_float": kept, "format": "QDQ, per-channel int8 weights "
            "(7-bit range), "
            "uint8 activations, MinMax calibration, Conv only"}


def quantize(source: Path, out: Path, videos: Sequence[Path], per_video: int = 4,
             float_first: int = FLOAT_FIRST) -> dict:
    """Calibrate on ``videos`` through the MoveNet adapter, quantize, write ``out`` and its JSON."""
    from workers.pose.adapters import load_pose_model

    model = load_pose_model("movenet", source, providers=["CPUExecutionProvider"], threads=1)
    tensors = calibration_tensors(model, videos, per_video)
    log.info("calibrating on %d frames of %d videos (input %s)", len(tensors), len(videos), tensors[0].shape)
    info = quantize_movenet(source, out, tensors, float_first)
    info["calibration_videos"] = [p.name for p in videos]
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
