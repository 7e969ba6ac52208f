"""ST-GCN (Yan et al., AAAI 2018) in PyTorch: a faithful re-implementation of
``net/st_gcn.py`` and ``net/utils/tgcn.py`` of yysijie/st-gcn.

Module names and parameter shapes match the original, so its state dicts load as they are
(see :mod:`workers.offline.stgcn.checkpoint`). Two deliberate differences, numerically
equivalent (float32 rounding only):

* the graph convolution is a reshape + matmul instead of ``einsum`` (no ``Einsum`` in ONNX);
* the global pooling is a mean over the (T', V) axes instead of ``avg_pool2d`` with a
  kernel taken from the input size (a fixed kernel would freeze T in an ONNX export).

Shapes: N batch, C channels (x, y, confidence), T frames, V joints, M persons; K spatial
partitions; T' = ceil(ceil(T / 2) / 2).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from workers.offline.stgcn.graph import Graph

log = logging.getLogger(__name__)

TEMPORAL_KERNEL = 9
# (out_channels, temporal stride) of the ten st_gcn blocks, in order.
CHANNEL_PLAN = ((64, 1), (64, 1), (64, 1), (64, 1), (128, 2), (128, 1), (128, 1),
                (256, 2), (256, 1), (256, 1))


class ConvTemporalGraphical(nn.Module):
    """The spatial graph convolution: 1x1 conv to K*C_out channels, then aggregation by A.

    ``forward(x (N, C_in, T, V), A (K, V, V)) -> (N, C_out, T, V)``. The conv bias is
    added before the aggregation (so it is spread over the neighbours by A), as in the
    original. Channels are split k-major: channel ``k * C_out + c``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels * kernel_size, kernel_size=(1, 1))

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # (N, K*C, T, V)
        n, _, t, v = x.shape
        k, c = self.kernel_size, self.out_channels
        # out[n, c, t, w] = sum_k sum_v x[n, k, c, t, v] * A[k, v, w]
        x = x.reshape(n, k, c, t, v).permute(0, 2, 3, 1, 4).reshape(n, c, t, k * v)
        return torch.matmul(x, A.reshape(k * v, A.shape[-1]))  # (N, C, T, V)


class STGCNBlock(nn.Module):
    """One st_gcn block: graph conv -> BN-ReLU-temporal conv-BN-Dropout, + residual, ReLU.

    ``forward(x (N, C_in, T, V), A (K, V, V)) -> (N, C_out, ceil(T / stride), V)``.
    ``residual``: ``False`` (block 0: nothing is added), else the identity when shapes
    agree, or a strided 1x1 conv + BN (module ``residual``) when they do not.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: int = 1, dropout: float = 0.0, residual: bool = True) -> None:
        super().__init__()
        t_kernel, k = kernel_size
        if t_kernel % 2 != 1:
            raise ValueError(f"the temporal kernel size must be odd, got {t_kernel}")
        padding = ((t_kernel - 1) // 2, 0)
        self.gcn = ConvTemporalGraphical(in_channels, out_channels, k)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (t_kernel, 1), (stride, 1), padding),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout, inplace=True),
        )
        self.residual: Optional[nn.Module] = None
        if not residual:
            self.residual_mode = "none"
        elif in_channels == out_channels and stride == 1:
            self.residual_mode = "identity"
        else:
            self.residual_mode = "conv"
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        if self.residual_mode == "none":
            return self.relu(self.tcn(self.gcn(x, A)))
        res = x if self.residual is None else self.residual(x)
        return self.relu(self.tcn(self.gcn(x, A)) + res)


class STGCN(nn.Module):
    """Spatial temporal graph convolutional network (the original's ``net.st_gcn.Model``).

    ``forward(x (N, C, T, V, M)) -> logits (N, num_class)`` (no softmax);
    ``extract_feature(x) -> (scores (N, num_class, T', V, M), features (N, 256, T', V, M))``.
    Persons are folded into the batch (index n*M + m) and meet only at the end, where
    their pooled features are averaged (absent, all-zero persons included).
    """

    def __init__(self, in_channels: int = 3, num_class: int = 400, layout: str = "openpose",
                 strategy: str = "spatial", max_hop: int = 1, dilation: int = 1,
                 edge_importance_weighting: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.graph = Graph(layout=layout, strategy=strategy, max_hop=max_hop, dilation=dilation)
        self.config = dict(in_channels=in_channels, num_class=num_class, layout=layout,
                           strategy=strategy, max_hop=max_hop, dilation=dilation,
                           edge_importance_weighting=edge_importance_weighting,
                           dropout=dropout)
        A = torch.tensor(self.graph.A, dtype=torch.float32)
        self.register_buffer("A", A)
        kernel_size = (TEMPORAL_KERNEL, A.shape[0])
        self.num_class = num_class
        self.num_node = A.shape[1]
        self.in_channels = in_channels
        self.data_bn = nn.BatchNorm1d(in_channels * self.num_node)
        blocks, c_in = [], in_channels
        for i, (c_out, stride) in enumerate(CHANNEL_PLAN):
            blocks.append(STGCNBlock(c_in, c_out, kernel_size, stride,
                                     dropout=dropout if i else 0.0, residual=bool(i)))
            c_in = c_out
        self.st_gcn_networks = nn.ModuleList(blocks)
        self.edge_importance: Optional[nn.ParameterList] = None
        if edge_importance_weighting:
            self.edge_importance = nn.ParameterList(
                [nn.Parameter(torch.ones(A.shape)) for _ in self.st_gcn_networks])
        self.fcn = nn.Conv2d(c_in, num_class, kernel_size=1)

    def normalise_input(self, x: torch.Tensor) -> torch.Tensor:
        """``data_bn`` over the (joint, coordinate) channels v*C + c.

        (N, C, T, V, M) -> (N*M, C, T, V), persons folded into the batch as n*M + m.
        """
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)
        x = self.data_bn(x)
        return x.reshape(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> post-ReLU output of the last block, (N*M, 256, T', V)."""
        if x.dim() != 5 or x.shape[1] != self.in_channels or x.shape[3] != self.num_node:
            raise ValueError(f"input must be (N, {self.in_channels}, T, {self.num_node}, M), "
                             f"got {tuple(x.shape)}")
        x = self.normalise_input(x)
        for i, block in enumerate(self.st_gcn_networks):
            A = self.A if self.edge_importance is None else self.A * self.edge_importance[i]
            x = block(x, A)
        return x

    def pool_logits(self, feat: torch.Tensor, m: int) -> torch.Tensor:
        """Block output (N*M, 256, T', V) -> logits (N, classes): mean over (T', V), then M, fcn."""
        pooled = feat.mean(dim=(2, 3)).reshape(-1, m, feat.shape[1]).mean(dim=1)  # (N, 256)
        return self.fcn(pooled[:, :, None, None]).reshape(-1, self.num_class)

    def position_scores(self, feat: torch.Tensor, m: int) -> torch.Tensor:
        """Block output (N*M, 256, T', V) -> scores (N, classes, T', V, M), fcn per position."""
        _, _, t, v = feat.shape
        return self.fcn(feat).reshape(-1, m, self.num_class, t, v).permute(0, 2, 3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> logits (N, num_class): pool over (T', V), mean over M, fcn."""
        return self.pool_logits(self.backbone(x), x.shape[4])

    def extract_feature(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, T, V, M) -> (scores (N, classes, T', V, M), features (N, 256, T', V, M)).

        ``scores`` is ``fcn`` at every position without pooling (bias included);
        ``features`` is the post-ReLU output of the last block.
        """
        m = x.shape[4]
        feat = self.backbone(x)
        return self.position_scores(feat, m), _unfold_persons(feat, m)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One backbone pass: (logits (N, classes), scores (N, classes, T', V, M),
        features (N, 256, T', V, M)), equal to :meth:`forward` and :meth:`extract_feature`."""
        m = x.shape[4]
        feat = self.backbone(x)
        return self.pool_logits(feat, m), self.position_scores(feat, m), _unfold_persons(feat, m)


def _unfold_persons(feat: torch.Tensor, m: int) -> torch.Tensor:
    """(N*M, C, T', V) -> (N, C, T', V, M)."""
    _, c, t, v = feat.shape
    return feat.reshape(-1, m, c, t, v).permute(0, 2, 3, 4, 1)


def build_model(num_class: int, layout: str = "openpose", strategy: str = "spatial",
                edge_importance_weighting: bool = True, seed: Optional[int] = None,
                **kwargs) -> STGCN:
    """An :class:`STGCN` in eval mode; ``seed`` makes its random init reproducible."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = STGCN(num_class=num_class, layout=layout, strategy=strategy,
                          edge_importance_weighting=edge_importance_weighting, **kwargs)
    else:
        model = STGCN(num_class=num_class, layout=layout, strategy=strategy,
                      edge_importance_weighting=edge_importance_weighting, **kwargs)
    return model.eval()
