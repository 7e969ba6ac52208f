"""The skeleton graph of ST-GCN as data (numpy only, no torch).

A re-implementation of ``net/utils/graph.py`` of yysijie/st-gcn: the joints and bones come
from :mod:`shared.skeleton` (OpenPose-18, NTU-RGB+D-25 and COCO-17), the adjacency tensor
``A`` of shape ``(K, V, V)`` from a partition strategy:

* ``uniform``  — K = 1: the normalised adjacency of all joints within ``max_hop``.
* ``distance`` — K = number of valid hops: one partition per hop distance.
* ``spatial``  — per valid hop > 0 two partitions (root + closer-or-equal to the centre,
  and farther from it), hop 0 is the root alone: K = 3 for ``max_hop=1``.

The graph convolution uses it as ``out[w] = sum_k sum_v x_k[v] * A[k, v, w]``. Every
column is normalised by the in-degree (self loop included), so ``A.sum((0, 1)) == 1``.
"""

from __future__ import annotations

import logging

import numpy as np

from shared.skeleton import get_layout

log = logging.getLogger(__name__)

STRATEGIES = ("uniform", "distance", "spatial")
# Names the original code uses for the layouts, mapped to shared.skeleton's names.
LAYOUT_ALIASES = {"openpose": "openpose", "ntu-rgb+d": "ntu-rgb+d", "coco": "coco"}


def get_hop_distance(num_node: int, edges, max_hop: int = 1) -> np.ndarray:
    """Hop distance between every two joints, ``(V, V)`` float64; ``inf`` beyond ``max_hop``."""
    adj = np.zeros((num_node, num_node))
    for i, j in edges:
        adj[j, i] = 1
        adj[i, j] = 1
    hop_dis = np.zeros((num_node, num_node)) + np.inf
    transfer = [np.linalg.matrix_power(adj, d) for d in range(max_hop + 1)]
    arrive = np.stack(transfer) > 0
    for d in range(max_hop, -1, -1):
        hop_dis[arrive[d]] = d
    return hop_dis


def normalize_digraph(adj: np.ndarray) -> np.ndarray:
    """``A @ D^-1`` with D the column sums (in-degrees): every non-empty column sums to 1."""
    degree = np.sum(adj, 0)
    num_node = adj.shape[0]
    dn = np.zeros((num_node, num_node))
    for i in range(num_node):
        if degree[i] > 0:
            dn[i, i] = degree[i] ** (-1)
    return np.dot(adj, dn)


class Graph:
    """The ST-GCN skeleton graph.

    ``layout``: ``openpose`` (V=18, centre 1 = neck), ``ntu-rgb+d`` (V=25, centre 20 =
    spine shoulder) or ``coco`` (V=17, centre 0 = nose). ``strategy``: one of
    :data:`STRATEGIES`. ``max_hop``: the largest hop distance that is connected;
    ``dilation``: the step between the hops used. ``A``: float64 ``(K, V, V)``.
    """

    def __init__(self, layout: str = "openpose", strategy: str = "uniform",
                 max_hop: int = 1, dilation: int = 1) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown graph strategy {strategy!r}; known: {list(STRATEGIES)}")
        if max_hop < 1 or dilation < 1:
            raise ValueError(f"max_hop ({max_hop}) and dilation ({dilation}) must be >= 1")
        self.layout = layout
        self.strategy = strategy
        self.max_hop = max_hop
        self.dilation = dilation
        self._set_edges(layout)
        self.hop_dis = get_hop_distance(self.num_node, self.edge, max_hop=max_hop)
        self.A = self._adjacency(strategy)

    def __str__(self) -> str:
        return f"Graph({self.layout}, {self.strategy}, max_hop={self.max_hop}, A={self.A.shape})"

    def _set_edges(self, layout: str) -> None:
        """Self links first, then the bones in the order of the layout table."""
        if layout not in LAYOUT_ALIASES:
            raise ValueError(f"unknown ST-GCN layout {layout!r}; known: {sorted(LAYOUT_ALIASES)}")
        spec = get_layout(LAYOUT_ALIASES[layout])
        self.num_node = spec.num_joints
        self.self_link = [(i, i) for i in range(self.num_node)]
        self.neighbor_link = [tuple(e) for e in spec.edges]
        self.edge = self.self_link + self.neighbor_link
        self.center = spec.center

    def _adjacency(self, strategy: str) -> np.ndarray:
        valid_hop = range(0, self.max_hop + 1, self.dilation)
        adjacency = np.zeros((self.num_node, self.num_node))
        for hop in valid_hop:
            adjacency[self.hop_dis == hop] = 1
        norm = normalize_digraph(adjacency)
        if strategy == "uniform":
            return norm[None].copy()
        if strategy == "distance":
            out = np.zeros((len(valid_hop), self.num_node, self.num_node))
            for i, hop in enumerate(valid_hop):
                out[i][self.hop_dis == hop] = norm[self.hop_dis == hop]
            return out
        return self._spatial(valid_hop, norm)

    def _spatial(self, valid_hop, norm: np.ndarray) -> np.ndarray:
        """Root / centripetal / centrifugal partitions, ``(K, V, V)`` with entry ``[k, v, w]``."""
        parts = []
        dist = self.hop_dis[:, self.center]  # distance of each joint to the centre
        for hop in valid_hop:
            root = np.zeros((self.num_node, self.num_node))
            close = np.zeros((self.num_node, self.num_node))
            further = np.zeros((self.num_node, self.num_node))
            for i in range(self.num_node):  # i: the joint receiving (w)
                for j in range(self.num_node):  # j: the joint sending (v)
                    if self.hop_dis[j, i] != hop:
                        continue
                    if dist[j] == dist[i]:
                        root[j, i] = norm[j, i]
                    elif dist[j] > dist[i]:
                        close[j, i] = norm[j, i]
                    else:
                        further[j, i] = norm[j, i]
            if hop == 0:
                parts.append(root)
            else:
                parts.append(root + close)
                parts.append(further)
        return np.stack(parts)
