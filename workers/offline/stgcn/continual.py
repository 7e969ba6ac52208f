"""Streaming (continual) ST-GCN: the windowed model's weights run one step at a time, with a
small state per track, as in CoST-GCN (Hedegaard et al., 2022). No retraining.

Why it works: in an ST-GCN block only the temporal convolution (kernel 9, padding 4, stride 1
or 2) mixes frames; ``data_bn``, the graph convolution, the BatchNorms (eval mode), ReLU and
the ``fcn`` head act on each frame alone. So each temporal convolution keeps the last 8 of
its inputs (a ring buffer), each residual branch keeps its last 4 inputs (the delay that
aligns it with the convolution's centre tap), and the head's global mean over time becomes a
running mean over the last ``T/4`` output positions.

One step takes :data:`FRAMES_PER_STEP` = 4 frames (the product of the temporal strides:
one output position of the network), so every layer gets the same whole number of inputs at
every step and the step graph has no control flow; a stride-2 layer turns 4 inputs into 2.
The runner (:mod:`workers.offline.stgcn.stepmodel`) collects a track's frames and runs a step per 4.

Delay: a convolution centred on input ``p`` needs ``p + 4``, so output position ``q`` comes
out :attr:`StreamingSTGCN.delay` positions after the step that brought its last frame (6
positions = 24 frames for the fall model's ``mini`` plan, 19 = 76 frames for the full
network): the windowed model fills those with zero padding instead of waiting.

Padding conventions: a state of zeros with ``age`` 0 is a track without history; the step
masks every convolution input at a position < 0, which is what the windowed model's zero
padding at the window's start is. :func:`stream_window` also masks positions >= the window's
length and flushes, i.e. reproduces the windowed model's end padding: with both, the streamed
per-position scores equal :meth:`STGCN.extract_feature`'s (float32 rounding).

Step graph (:func:`export_step_onnx`): inputs ``frames`` (N, 3, 4, V, M) and the state,
outputs ``scores`` (N, classes: the running mean of the per-position logits, the classifier's
vote), ``position`` (N, classes: this step's position) and the next state; N dynamic.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.action.card import ModelCard
from workers.offline.stgcn.model import STGCN, STGCNBlock
from workers.offline.stgcn.stepmodel import STEP_CARD_FORMAT, STEP_CARD_VERSION

log = logging.getLogger(__name__)

FRAMES_PER_STEP = 4
HISTORY = 8  # kernel 9 - 1: inputs a temporal convolution keeps
CENTRE = 4  # (kernel - 1) / 2: the residual delay
MIN_OPSET = 12


@dataclass(frozen=True)
class LayerTiming:
    """Per block: ``rate`` inputs per step; ``lag``: at step n the block's inputs are
    positions ``n * rate - lag + i``; its outputs are ``rate / stride`` positions at
    ``n * rate / stride - out_lag + o``."""

    rate: int
    lag: int
    stride: int

    @property
    def out_lag(self) -> int:
        return (self.lag + CENTRE) // self.stride


def layer_timings(strides: list[int]) -> list[LayerTiming]:
    """The timing of each block; ValueError when the strides do not fit 4-frame steps."""
    rate, lag, out = FRAMES_PER_STEP, 0, []
    for s in strides:
        if s not in (1, 2) or rate % s or (lag + CENTRE) % s:
            raise ValueError(f"temporal strides {strides} do not fit steps of {FRAMES_PER_STEP} frames")
        t = LayerTiming(rate, lag, s)
        out.append(t)
        rate, lag = rate // s, t.out_lag
    if rate != 1:
        raise ValueError(f"temporal strides {strides} must multiply to {FRAMES_PER_STEP}")
    return out


class ContinualBlock(nn.Module):
    """One :class:`STGCNBlock` run on ``rate`` new frames per step with its buffers."""

    def __init__(self, block: STGCNBlock, A: torch.Tensor, timing: LayerTiming) -> None:
        super().__init__()
        self.gcn, self.bn_in = block.gcn, block.tcn[0]
        conv, self.bn_out = block.tcn[2], block.tcn[3]
        self.register_buffer("A", A.detach().clone())
        self.weight, self.bias = conv.weight, conv.bias
        self.timing = timing
        self.mode = block.residual_mode
        self.res_conv = block.residual[0] if block.residual is not None else None
        self.res_bn = block.residual[1] if block.residual is not None else None
        self.in_channels = block.gcn.conv.in_channels
        self.out_channels = block.gcn.out_channels

    def forward(self, x: torch.Tensor, valid: torch.Tensor, buf: torch.Tensor,
                res: Optional[torch.Tensor]):
        """x (B, C_in, rate, V), valid (B, 1, rate, 1), buf (B, C_out, 8, V), res (B, C_in, 4, V)
        -> (out (B, C_out, rate/stride, V), next buf, next res)."""
        r, s = self.timing.rate, self.timing.stride
        h = torch.relu(self.bn_in(self.gcn(x, self.A))) * valid
        full = torch.cat([buf, h], dim=2)
        y = self.bn_out(F.conv2d(full, self.weight, self.bias, stride=(s, 1)))
        next_buf = full[:, :, r:]
        if self.mode == "none":
            return torch.relu(y), next_buf, None
        rfull = torch.cat([res, x], dim=2)  # positions of the conv's centre taps first
        r_in = rfull[:, :, 0:r:s]
        if self.res_conv is not None:
            r_in = self.res_bn(F.conv2d(r_in, self.res_conv.weight, self.res_conv.bias))
        return torch.relu(y + r_in), next_buf, rfull[:, :, r:]


class StreamingSTGCN(nn.Module):
    """The continual form of ``model`` (eval mode, weights shared) with a ``window`` of T frames:
    the running mean covers its T/4 positions. ``step(frames, *state, limits)``; see the module doc."""

    def __init__(self, model: STGCN, window: int) -> None:
        super().__init__()
        if window <= 0 or window % FRAMES_PER_STEP:
            raise ValueError(f"window {window} is not a positive multiple of {FRAMES_PER_STEP}")
        model = model.eval()
        self.model = model
        self.window, self.positions = window, window // FRAMES_PER_STEP
        self.timings = layer_timings([b.tcn[2].stride[0] for b in model.st_gcn_networks])
        blocks = []
        for i, (block, t) in enumerate(zip(model.st_gcn_networks, self.timings)):
            A = model.A if model.edge_importance is None else model.A * model.edge_importance[i]
            blocks.append(ContinualBlock(block, A, t))
        self.blocks = nn.ModuleList(blocks)
        self.delay = self.timings[-1].out_lag  # positions
        self.num_class, self.num_node, self.in_channels = model.num_class, model.num_node, model.in_channels

    # -- state ----------------------------------------------------------------------------
    def state_shapes(self, num_person: int) -> dict[str, tuple[int, ...]]:
        """Name -> per-track shape (without N), in the step's order."""
        v = self.num_node
        shapes: dict[str, tuple[int, ...]] = {"age": (), "hist": (self.num_class, self.positions)}
        for i, b in enumerate(self.blocks):
            shapes[f"conv{i}"] = (num_person, b.out_channels, HISTORY, v)
            if b.mode != "none":
                shapes[f"res{i}"] = (num_person, b.in_channels, CENTRE, v)
        return shapes

    def initial_state(self, n: int, num_person: int) -> list[torch.Tensor]:
        return [torch.zeros((n, *s)) for s in self.state_shapes(num_person).values()]

    # -- one step ---------------------------------------------------------------------------
    def _valid(self, age: torch.Tensor, t: LayerTiming, m: int, limit: Optional[int]) -> torch.Tensor:
        """(N*M, 1, rate, 1): 1 where the block's input position is >= 0 (and < limit)."""
        pos = age[:, None] * t.rate - t.lag + torch.arange(t.rate, dtype=age.dtype)[None]
        ok = pos >= 0
        if limit is not None:
            ok = ok & (pos < limit)
        ok = ok.to(age.dtype)
        return ok[:, None, :].expand(-1, m, -1).reshape(-1, 1, t.rate, 1)

    def step(self, frames: torch.Tensor, *state: torch.Tensor,
             limits: Optional[list[int]] = None) -> tuple[torch.Tensor, ...]:
        """frames (N, 3, 4, V, M), state (see :meth:`state_shapes`) ->
        (scores (N, classes), position (N, classes), *next state)."""
        n, c, t, v, m = frames.shape
        if c != self.in_channels or t != FRAMES_PER_STEP or v != self.num_node:
            raise ValueError(f"frames must be (N, {self.in_channels}, {FRAMES_PER_STEP}, "
                             f"{self.num_node}, M), got {tuple(frames.shape)}")
        age, hist, rest = state[0], state[1], list(state[2:])
        x = self.model.normalise_input(frames)  # (N*M, 3, 4, V)
        out_state: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            buf = rest.pop(0)
            res = rest.pop(0) if block.mode != "none" else None
            lim = None if limits is None else limits[i]
            x, nbuf, nres = block(x, self._valid(age, block.timing, m, lim),
                                  _fold(buf), None if res is None else _fold(res))
            out_state.append(_unfold(nbuf, m))
            if nres is not None:
                out_state.append(_unfold(nres, m))
        logits = self.model.fcn(x)  # (N*M, classes, 1, V)
        position = logits.reshape(n, m, self.num_class, v).mean(dim=(1, 3))
        q = age - self.delay  # this step's output position
        seen = (q >= 0).to(age.dtype)[:, None]
        next_hist = torch.cat([hist[:, :, 1:], (position * seen)[:, :, None]], dim=2)
        count = torch.clamp(q + 1, min=1.0, max=float(self.positions))[:, None]
        scores = next_hist.sum(dim=2) / count
        return (scores, position, age + 1, next_hist, *out_state)

    def forward(self, frames: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.step(frames, *state)


def _fold(s: torch.Tensor) -> torch.Tensor:
    """(N, M, C, K, V) -> (N*M, C, K, V)."""
    return s.reshape(-1, *s.shape[2:])


def _unfold(s: torch.Tensor, m: int) -> torch.Tensor:
    return s.reshape(-1, m, *s.shape[1:])


def layer_lengths(stream: StreamingSTGCN, frames: int) -> list[int]:
    """Each block's input length for a window of ``frames`` frames (the windowed model's)."""
    out, n = [], frames
    for t in stream.timings:
        out.append(n)
        n = -(-n // t.stride)
    return out


@torch.no_grad()
def stream_window(stream: StreamingSTGCN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The windowed model's conventions, streamed: ``x`` (N, 3, T, V, M) from a zero state,
    inputs beyond T masked, then ``delay`` flush steps -> (per-position logits (N, classes,
    T/4) averaged over V and M, the running-mean scores after the last position (N, classes))."""
    n, _, t, _, m = x.shape
    if t % FRAMES_PER_STEP:
        raise ValueError(f"T ({t}) must be a multiple of {FRAMES_PER_STEP}")
    state = stream.initial_state(n, m)
    limits = layer_lengths(stream, t)
    steps = t // FRAMES_PER_STEP
    positions, scores = [], None
    for k in range(steps + stream.delay):
        chunk = x[:, :, k * 4:(k + 1) * 4] if k < steps else torch.zeros_like(x[:, :, :4])
        scores, position, *state = stream.step(chunk, *state, limits=limits)
        if k >= stream.delay:
            positions.append(position)
    return torch.stack(positions, dim=2), scores


# -- ONNX ---------------------------------------------------------------------------------------
def step_card(stream: StreamingSTGCN, card: ModelCard, model_file: str, num_person: int) -> dict:
    """The step graph's card: the model card's fields that the runner needs, the step's I/O and
    the per-track state shapes."""
    shapes = stream.state_shapes(num_person)
    return {"format": STEP_CARD_FORMAT, "version": STEP_CARD_VERSION, "name": card.name,
            "model": model_file, "labels": list(card.labels), "layout": card.layout,
            "window": stream.window, "fps": card.fps, "num_person": num_person,
            "normalisation": card.normalisation, "frames_per_step": FRAMES_PER_STEP,
            "delay_positions": stream.delay, "delay_frames": stream.delay * FRAMES_PER_STEP,
            "positions": stream.positions, "frames_input": "frames",
            "state": {k: list(v) for k, v in shapes.items()},
            "outputs": ["scores", "position"]}


def step_path_for(model_path: str | os.PathLike) -> Path:
    """``fall.onnx`` -> ``fall.step.onnx`` (its card: ``fall.step.json``)."""
    p = Path(model_path)
    return p.with_name(p.stem + ".step.onnx")


def export_step_onnx(model: STGCN, card: ModelCard, out_path: str | os.PathLike, model_file: str = "",
                     opset: int = 17, tolerance: float = 1e-4) -> dict:
    """Write the step graph of ``model`` (with ``card``: window, num_person) to ``out_path``
    and its step card beside it (``.json``); checked against PyTorch on random steps. Returns
    the step card."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old; the step graph needs >= {MIN_OPSET}")
    stream = StreamingSTGCN(model, card.window).eval()
    m = card.num_person
    names = list(stream.state_shapes(m))
    inputs = ["frames", *(f"state.{k}" for k in names)]
    outputs = ["scores", "position", *(f"next.{k}" for k in names)]
    example = (torch.zeros(2, stream.in_channels, FRAMES_PER_STEP, stream.num_node, m),
               *stream.initial_state(2, m))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(stream, example, str(out_path), dynamo=False, input_names=inputs,
                          output_names=outputs, opset_version=opset, do_constant_folding=True,
                          dynamic_axes={k: {0: "batch"} for k in inputs + outputs})
    try:
        _check_graph(out_path)
        info = step_card(stream, card, model_file or out_path.name, m)
        info["max_abs_diff"] = verify_step(stream, out_path, m, tolerance)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    out_path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("step graph %s: delay %d frames, state %s, max |onnx - torch| %.2e", out_path,
             info["delay_frames"], info["state"], info["max_abs_diff"])
    return info


def _check_graph(path: Path) -> None:
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    einsum = [n.name for n in proto.graph.node if n.op_type == "Einsum"]
    if einsum:
        raise RuntimeError(f"{path}: the step graph has Einsum nodes {einsum}")


@torch.no_grad()
def verify_step(stream: StreamingSTGCN, path: str | os.PathLike, num_person: int,
                tolerance: float = 1e-4, steps: int = 12) -> float:
    """Run ``steps`` random steps of 3 tracks through onnxruntime and PyTorch, the state carried
    by each; returns the worst |Δ| of the scores, RuntimeError beyond ``tolerance``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    t_state = stream.initial_state(3, num_person)
    o_state = [s.numpy() for s in t_state]
    names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    for _ in range(steps):
        x = (rng.standard_normal((3, 3, FRAMES_PER_STEP, stream.num_node, num_person)) * 0.3
             ).astype(np.float32)
        want, _, *t_state = stream.step(torch.from_numpy(x), *t_state)
        got, _, *o_state = sess.run(None, dict(zip(names, [x, *o_state])))
        diff = float(np.abs(want.numpy() - got).max())
        if not diff <= tolerance * max(1.0, float(want.abs().max())):
            raise RuntimeError(f"{path}: the step graph differs from PyTorch by {diff:.3g}")
        worst = max(worst, diff)
    return worst


def main(argv: Optional[list[str]] = None) -> int:
    """``actionstream stgcn streaming MODEL.onnx [--out X.step.onnx]``."""
    import argparse

    from workers.action.card import load_card
    from workers.offline.stgcn.onnx_weights import stgcn_from_onnx

    p = argparse.ArgumentParser(prog="actionstream stgcn streaming",
                                description="the streaming step graph of an exported ST-GCN")
    p.add_argument("model", help="an ST-GCN .onnx with its card (e.g. workers/action/models/fall.onnx)")
    p.add_argument("--out", help="default: MODEL.step.onnx beside the model")
    p.add_argument("--window", type=int, help="T of the running mean (default: the card's window)")
    args = p.parse_args(argv)
    card = load_card(args.model)
    if args.window:
        from dataclasses import replace
        card = replace(card, window=args.window)
    out = args.out or step_path_for(args.model)
    info = export_step_onnx(stgcn_from_onnx(args.model), card, out, Path(args.model).name)
    print(f"wrote {out}: delay {info['delay_frames']} frames, max |onnx - torch| {info['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
