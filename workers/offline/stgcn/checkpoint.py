"""Loading official ST-GCN state dicts (yysijie/st-gcn ``models/st_gcn.*.pt`` and re-hosts).

The original's loader (``torchlight.io.IO.load_weights``) rewrites every key to
``key.split("module.")[-1]`` (DataParallel prefixes) and then loads strictly; so does
:func:`load_checkpoint`, except that it never falls back silently: a missing, unexpected
or mis-shaped key raises :class:`CheckpointError` naming them. Two keys are tolerated when
absent because the model can supply them: ``num_batches_tracked`` (pre-0.4.1 checkpoints
lack all 23) and the graph buffer ``A`` (computed from the layout). When present, ``A``
overrides the computed adjacency, as in the original.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from shared.errors import UserError
from workers.offline.stgcn.model import STGCN

log = logging.getLogger(__name__)

OPTIONAL_SUFFIXES = ("num_batches_tracked",)
OPTIONAL_KEYS = ("A",)
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, unreadable or does not fit the model; the text says why."""


def read_state_dict(path: str | os.PathLike) -> "OrderedDict[str, torch.Tensor]":
    """Read a checkpoint file into a plain ``{key: tensor}`` dict with ``module.`` stripped.

    Accepts a bare state dict or one wrapped under ``state_dict`` / ``model`` (as saved by
    training frameworks). Loaded on the CPU with ``weights_only=True`` (no pickled code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"checkpoint {path} cannot be read as a PyTorch state dict: "
                              f"{type(exc).__name__}: {exc}") from None
    return normalise_state_dict(raw, where=str(path))


def normalise_state_dict(raw: Any, where: str = "checkpoint") -> "OrderedDict[str, torch.Tensor]":
    """Unwrap a training checkpoint and drop everything up to the last ``module.`` of each key."""
    if isinstance(raw, Mapping):
        for key in WRAPPER_KEYS:
            inner = raw.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                raw = inner
                break
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{where}: expected a non-empty dict of tensors (a state dict), "
                              f"got {type(raw).__name__}")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: entry {key!r} is a {type(value).__name__}, "
                                  "not a tensor")
        out[str(key).split("module.")[-1]] = value
    return out


def infer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What a state dict says about its model: num_class, num_node (V), in_channels,
    partitions (K) and edge_importance_weighting. Keys it cannot tell are left out."""
    info: dict[str, Any] = {}
    if "fcn.weight" in state:
        info["num_class"] = int(state["fcn.weight"].shape[0])
    if "data_bn.weight" in state and "st_gcn_networks.0.gcn.conv.weight" in state:
        c_in = int(state["st_gcn_networks.0.gcn.conv.weight"].shape[1])
        info["in_channels"] = c_in
        info["num_node"] = int(state["data_bn.weight"].shape[0]) // max(c_in, 1)
    if "A" in state:
        info["partitions"] = int(state["A"].shape[0])
        info["num_node"] = int(state["A"].shape[-1])
    info["edge_importance_weighting"] = any(k.startswith("edge_importance.") for k in state)
    return info


def _check_keys(model: STGCN, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in OPTIONAL_KEYS
               and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in state if k in own and state[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return
    cfg = model.config
    info = infer_config(state)
    lines = [f"{where} does not fit ST-GCN(num_class={cfg['num_class']}, layout={cfg['layout']!r}, "
             f"strategy={cfg['strategy']!r}, edge_importance="
             f"{cfg['edge_importance_weighting']}); the checkpoint says {info}{_hint(model, info)}"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            more = f", ... ({len(items)} in all)" if len(items) > 12 else ""
            shown = ", ".join(items[:12]) + more
            lines.append(f"  {title}: {shown}")
    raise CheckpointError("\n".join(lines))


def _hint(model: STGCN, info: Mapping[str, Any]) -> str:
    """A suggestion when the checkpoint's joint count or edge importance differs."""
    from shared.skeleton import LAYOUTS

    hints = []
    v = info.get("num_node")
    if v is not None and v != model.num_node:
        names = [name for name, lay in LAYOUTS.items() if lay.num_joints == v]
        hints.append(f"it has V={v} joints (layout {' or '.join(names) or 'unknown'}), the model "
                     f"V={model.num_node}")
    if info.get("edge_importance_weighting") != model.config["edge_importance_weighting"]:
        hints.append("edge importance " + ("present" if info.get("edge_importance_weighting")
                                           else "absent") + " in the checkpoint")
    return f" ({'; '.join(hints)})" if hints else ""


def load_checkpoint(model: STGCN, source: str | os.PathLike | Mapping[str, torch.Tensor],
                    where: Optional[str] = None) -> STGCN:
    """Load a state dict (a path or a mapping) strictly into ``model``; returns ``model``.

    ``where`` names the source in messages. Raises :class:`CheckpointError` for a missing
    or unreadable file and for any key or shape mismatch (all of them named in the message).
    """
    if isinstance(source, Mapping):
        where, state = where or "checkpoint", normalise_state_dict(source, where or "checkpoint")
    else:
        where, state = where or f"checkpoint {source}", read_state_dict(source)
    _check_keys(model, state, where)
    own = model.state_dict()
    full = OrderedDict((k, state.get(k, own[k])) for k in own)
    if "A" in state and not torch.allclose(state["A"].float(), own["A"], atol=1e-6):
        log.warning("%s: its graph adjacency A differs from the one computed for layout %r, "
                    "strategy %r; the checkpoint's A is used", where, model.config["layout"],
                    model.config["strategy"])
    model.load_state_dict(full, strict=True)
    log.info("loaded %s (%d tensors)", where, len(state))
    return model


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (the provenance of an exported model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
