"""An exported ST-GCN ONNX back into a PyTorch :class:`~workers.offline.stgcn.model.STGCN`, with
the same weights (the shipped models are kept as ONNX only).

The exporter (:mod:`workers.offline.stgcn.export`) writes the network configuration into the
ONNX ``metadata_props`` (``stgcn.*``) and keeps the named parameters of ``data_bn``, every
block's ``gcn.conv`` and ``tcn.0`` (BatchNorm), and ``fcn``; constant folding merges each
temporal convolution with the BatchNorm after it (``tcn.2`` + ``tcn.3``), each residual
convolution with its BatchNorm, and ``A * edge_importance`` into one (K, V, V) constant per
block. Those come back as the convolution (weights and bias of the merged pair), an
identity BatchNorm after it, and an edge importance equal to the merged constant divided by
``A`` where ``A`` is non-zero. Numerically the same model up to float32 rounding.
"""

from __future__ import annotations

import ast
import logging
import os

import numpy as np
import torch

from shared.errors import UserError
from workers.offline.stgcn.model import STGCN

log = logging.getLogger(__name__)


class OnnxWeightsError(UserError, ValueError):
    """The ONNX file is not an ST-GCN written by this project's exporter."""


def _config(proto) -> dict:
    meta = {p.key[len("stgcn."):]: p.value for p in proto.metadata_props if p.key.startswith("stgcn.")}
    if "num_class" not in meta:
        raise OnnxWeightsError("no stgcn.* metadata (not written by workers.offline.stgcn.export)")
    cfg = {k: ast.literal_eval(v) if k not in ("layout", "strategy") else v for k, v in meta.items()}
    return cfg


def stgcn_from_onnx(path: str | os.PathLike) -> STGCN:
    """The :class:`STGCN` (eval mode) whose export is ``path``. Raises :class:`OnnxWeightsError`
    when the graph does not hold the expected parameters."""
    import onnx
    from onnx import numpy_helper

    from workers.offline.stgcn.train import build_stgcn

    proto = onnx.load(str(path))
    cfg = _config(proto)
    model = build_stgcn(int(cfg["num_class"]), layout=cfg["layout"], channels=cfg.get("channels"),
                        edge_importance=bool(cfg["edge_importance_weighting"]))
    model.eval()
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    state = model.state_dict()
    named = {k[len("model."):]: v for k, v in inits.items() if k.startswith("model.")}
    for key, value in named.items():
        if key not in state or tuple(state[key].shape) != value.shape:
            raise OnnxWeightsError(f"{path}: parameter {key} {value.shape} does not fit the model")
        state[key] = torch.from_numpy(value.copy())
    for i, block in enumerate(model.st_gcn_networks):
        prefix = f"/st_gcn_networks.{i}/"
        _merged_conv(proto, inits, prefix + "tcn/tcn.2/", f"st_gcn_networks.{i}.tcn.2", state)
        _identity_bn(state, f"st_gcn_networks.{i}.tcn.3")
        if block.residual is not None:
            _merged_conv(proto, inits, prefix + "residual/residual.0/",
                         f"st_gcn_networks.{i}.residual.0", state)
            _identity_bn(state, f"st_gcn_networks.{i}.residual.1")
        if model.edge_importance is not None:
            a_eff = _adjacency(proto, inits, prefix + "gcn/")
            a = model.A.numpy()
            imp = np.where(a != 0, a_eff / np.where(a != 0, a, 1.0), 1.0).astype(np.float32)
            state[f"edge_importance.{i}"] = torch.from_numpy(imp)
    model.load_state_dict(state)
    log.info("ST-GCN read back from %s: %d classes, plan %s", path, model.num_class, cfg.get("channels"))
    return model.eval()


def _node(proto, prefix: str, op: str):
    nodes = [n for n in proto.graph.node if n.op_type == op and n.name.startswith(prefix)]
    if len(nodes) != 1:
        raise OnnxWeightsError(f"expected one {op} node under {prefix}, found {len(nodes)}")
    return nodes[0]


def _merged_conv(proto, inits: dict, prefix: str, module: str, state: dict) -> None:
    node = _node(proto, prefix, "Conv")
    weight, bias = (inits.get(name) for name in node.input[1:3])
    if weight is None or bias is None or tuple(state[module + ".weight"].shape) != weight.shape:
        raise OnnxWeightsError(f"the Conv under {prefix} does not hold {module}'s weights")
    state[module + ".weight"] = torch.from_numpy(weight.copy())
    state[module + ".bias"] = torch.from_numpy(bias.copy())


def _identity_bn(state: dict, module: str) -> None:
    """A BatchNorm that passes its input through: the merged conv already applied it."""
    c = state[module + ".weight"].shape[0]
    state[module + ".weight"] = torch.ones(c)
    state[module + ".bias"] = torch.zeros(c)
    state[module + ".running_mean"] = torch.zeros(c)
    state[module + ".running_var"] = torch.full((c,), 1.0 - 1e-5)  # eps: sqrt(var + eps) = 1


def _adjacency(proto, inits: dict, prefix: str) -> np.ndarray:
    """The folded ``A * edge_importance`` (K, V, V) of the block's graph convolution: the
    constant behind the second input of its MatMul (blocks with equal values share one)."""
    matmul = _node(proto, prefix, "MatMul")
    name = matmul.input[1]
    producer = {out: n for n in proto.graph.node for out in n.output}
    while name not in inits and name in producer and producer[name].op_type in ("Reshape", "Identity"):
        name = producer[name].input[0]
    if name not in inits or inits[name].ndim not in (2, 3):
        raise OnnxWeightsError(f"the MatMul under {prefix} does not take a constant adjacency")
    a = inits[name]
    return a if a.ndim == 3 else a.reshape(-1, a.shape[1], a.shape[1])
