"""Training ST-GCN on CPU or GPU: the loop, evaluation (top-1/top-5), checkpoints, ONNX export.

The loss is computed on the logits the action worker computes: per-position class scores
``(N, classes, T', V, M)`` averaged over V, M and the *voted* positions (those covering
valid frames, or the last ``vote_last`` of them, see
:func:`workers.action.classifier.voted_positions`). For unpadded windows and
``vote_last = 0`` these are the model's own logits (the head is linear), i.e. the original
training. Batches hold one T bucket each (:func:`workers.offline.stgcn.feeder.batches`).

``channels`` (a list of ``(out_channels, temporal_stride)``) builds a slimmer network with
the same module names; the default is the original ten-block plan.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from workers.offline.stgcn.feeder import ArrayDataset, batches
from workers.offline.stgcn.model import STGCN, STGCNBlock, TEMPORAL_KERNEL
from workers.offline.stgcn.plans import PLANS  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

T_OUT = 4  # the original plan halves T twice
# Block plans (out_channels, temporal stride); None = the original ten blocks (3.1 M
# parameters, ~390 ms per 64-frame sample per training step on 2 CPU cores), "small"
# 0.5 M (~37 ms), "tiny" 0.18 M (~21 ms) -- measured with M = 2, batch 32.


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_stgcn(num_class: int, layout: str = "openpose",
                channels: Optional[Sequence[Sequence[int]]] = None, dropout: float = 0.0,
                edge_importance: bool = True, seed: Optional[int] = None) -> STGCN:
    """An :class:`STGCN` (train mode); ``channels`` replaces its block plan, whose temporal
    strides must multiply to 4 (the action worker's T/4 output positions)."""
    if seed is not None:
        torch.manual_seed(seed)
    model = STGCN(num_class=num_class, layout=layout, dropout=dropout,
                  edge_importance_weighting=edge_importance)
    if channels is None:
        return model
    plan = [(int(c), int(s)) for c, s in channels]
    if int(np.prod([s for _, s in plan])) != T_OUT:
        raise ValueError(f"channel plan {plan}: the temporal strides must multiply to {T_OUT}")
    k = model.A.shape[0]
    blocks, c_in = [], model.in_channels
    for i, (c_out, stride) in enumerate(plan):
        blocks.append(STGCNBlock(c_in, c_out, (TEMPORAL_KERNEL, k), stride,
                                 dropout=dropout if i else 0.0, residual=bool(i)))
        c_in = c_out
    model.st_gcn_networks = nn.ModuleList(blocks)
    if edge_importance:
        model.edge_importance = nn.ParameterList(
            [nn.Parameter(torch.ones(model.A.shape)) for _ in blocks])
    model.fcn = nn.Conv2d(c_in, num_class, kernel_size=1)
    model.config["channels"] = plan
    return model


def voted_logits(model: STGCN, x: torch.Tensor, lengths: torch.Tensor,
                 vote_last: int = 0) -> torch.Tensor:
    """Logits ``(N, classes)`` as the action worker votes: ``x`` ``(N, 3, T, V, M)``,
    ``lengths`` ``(N,)`` valid frames."""
    scores = model.position_scores(model.backbone(x), x.shape[4]).mean(dim=(3, 4))  # (N, C, T')
    positions = scores.shape[2]
    end = torch.clamp((lengths + T_OUT - 1) // T_OUT, max=positions)
    start = torch.clamp(end - vote_last, min=0) if vote_last > 0 else torch.zeros_like(end)
    idx = torch.arange(positions, device=x.device)[None, :]
    mask = ((idx >= start[:, None]) & (idx < end[:, None])).to(scores.dtype)  # (N, T')
    return (scores * mask[:, None]).sum(dim=2) / mask.sum(dim=1).clamp(min=1)[:, None]


def class_weights(labels: np.ndarray, num_class: int, mode: Optional[str]) -> Optional[np.ndarray]:
    """``balanced``: n / (classes_present * count) per class (0 for absent classes);
    ``binary``: class 1 against the rest taken together, each half of the weight (every other
    class n / (2 * rest); with 2 classes the same as ``balanced``); None: off."""
    if not mode or mode == "none":
        return None
    if mode not in ("balanced", "binary"):
        raise ValueError(f"class_weight must be 'balanced', 'binary' or 'none', got {mode!r}")
    counts = np.bincount(labels, minlength=num_class).astype(np.float64)
    if mode == "binary":
        rest = len(labels) - counts[1]
        weights = np.full(num_class, len(labels) / (2 * max(rest, 1)))
        weights[1] = len(labels) / (2 * max(counts[1], 1))
        return weights
    present = max(1, int((counts > 0).sum()))
    return np.where(counts > 0, len(labels) / (present * np.maximum(counts, 1)), 0.0)


@dataclass
class TrainOptions:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.1
    optimizer: str = "sgd"  # sgd (the original: momentum 0.9, nesterov) or adamw
    weight_decay: float = 1e-4
    step: Sequence[int] = ()  # epochs at which lr *= 0.1 (the original schedule)
    class_weight: Optional[str] = "balanced"
    vote_last: int = 0
    device: str = "auto"
    seed: int = 0
    work_dir: Optional[str] = None  # checkpoints epoch{n:03d}.pt go here
    progress: bool = True  # tqdm bar
    eval_every: int = 1


@dataclass
class TrainResult:
    model: STGCN
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    checkpoints: list[Path] = field(default_factory=list)


def _optimizer(model: nn.Module, opt: TrainOptions) -> torch.optim.Optimizer:
    if opt.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=0.9, nesterov=True,
                               weight_decay=opt.weight_decay)
    if opt.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {opt.optimizer!r}")


def fit(model: STGCN, train: ArrayDataset, opt: TrainOptions,
        val: Optional[ArrayDataset] = None) -> TrainResult:
    """Train ``model`` on ``train``; per epoch: loss, top-1/top-5 on ``val`` (if given),
    a checkpoint in ``opt.work_dir``. Returns the model (eval mode, on the CPU)."""
    from tqdm import tqdm

    device = pick_device(opt.device)
    rng = np.random.default_rng(opt.seed)
    torch.manual_seed(opt.seed)
    model.to(device).train()
    weights = class_weights(train.labels, model.num_class, opt.class_weight)
    loss_fn = nn.CrossEntropyLoss(
        weight=None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device))
    optim = _optimizer(model, opt)
    result, start = TrainResult(model), time.perf_counter()
    for epoch in range(1, opt.epochs + 1):
        lr = opt.lr * 0.1 ** sum(epoch > s for s in opt.step)
        for group in optim.param_groups:
            group["lr"] = lr
        n_batches = -(-len(train) // opt.batch_size)
        losses = []
        bar = tqdm(batches(train, opt.batch_size, True, rng), total=n_batches,
                   desc=f"epoch {epoch}/{opt.epochs}", disable=not opt.progress, leave=False)
        for x, y, lengths in bar:
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            logits = voted_logits(model, x, torch.from_numpy(lengths).to(device), opt.vote_last)
            loss = loss_fn(logits, y)
            optim.zero_grad()
            loss.backward()
            optim.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.3g}")
        row = {"epoch": epoch, "lr": lr, "loss": float(np.mean(losses)) if losses else float("nan")}
        if val is not None and len(val) and epoch % opt.eval_every == 0:
            row.update(topk(evaluate(model, val, opt.batch_size, opt.vote_last, device), val.labels))
            model.train()
        result.history.append(row)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                   if k != "epoch"))
        if opt.work_dir:
            result.checkpoints.append(save_checkpoint(model, Path(opt.work_dir), epoch, row))
    result.seconds = time.perf_counter() - start
    model.cpu().eval()
    return result


@torch.no_grad()
def evaluate(model: STGCN, data: ArrayDataset, batch_size: int = 64, vote_last: int = 0,
             device: Optional[torch.device] = None) -> np.ndarray:
    """Class probabilities float32 ``(N, classes)`` for every sample of ``data``, in order."""
    device = device or next(model.parameters()).device
    model.eval()
    data = ArrayDataset(data.data, data.labels, data.lengths)  # no augmentation
    order = np.arange(len(data))
    out = np.zeros((len(data), model.num_class), dtype=np.float32)
    pos = 0
    for x, _, lengths in batches(data, batch_size, shuffle=False, bucket=T_OUT):
        logits = voted_logits(model, torch.from_numpy(x).to(device),
                              torch.from_numpy(lengths).to(device), vote_last)
        out[pos:pos + len(x)] = torch.softmax(logits.double(), dim=1).float().cpu().numpy()
        pos += len(x)
    return _unbucket(out, data, order)


def _unbucket(probs: np.ndarray, data: ArrayDataset, order: np.ndarray) -> np.ndarray:
    """Rows of :func:`batches` (grouped by T bucket, unshuffled) back to dataset order."""
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(-(-max(int(data.lengths[i]), 1) // T_OUT) * T_OUT, []).append(int(i))
    flat = [i for ks in groups.values() for i in ks]
    out = np.empty_like(probs)
    out[flat] = probs
    return out


def topk(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy (top-k with k = min(5, classes))."""
    k = min(5, probs.shape[1])
    best = np.argsort(-probs, axis=1)
    return {"top1": float((best[:, 0] == labels).mean()),
            "top5": float((best[:, :k] == labels[:, None]).any(axis=1).mean())}


def save_checkpoint(model: STGCN, work_dir: Path, epoch: int, metrics: dict) -> Path:
    """``work_dir/epoch{epoch:03d}.pt``: ``{"state_dict", "config", "epoch", "metrics"}``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"epoch{epoch:03d}.pt"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "config": dict(model.config), "epoch": epoch,
                "metrics": metrics}, path)
    return path


def load_trained(path: str | Path) -> STGCN:
    """A model saved by :func:`save_checkpoint` (eval mode)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ckpt["config"]
    model = build_stgcn(cfg["num_class"], cfg["layout"], cfg.get("channels"),
                        cfg.get("dropout", 0.0), cfg["edge_importance_weighting"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
