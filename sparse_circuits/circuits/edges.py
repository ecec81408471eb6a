"""Edges of a circuit (SPEC section 6): nonzero weights between two kept nodes.

Counted: for every (weight, source, destination) of the block's wiring (`model.Block.WIRING`),
weight[j, i] != 0 with source node i and destination node j both kept. Reported separately:
residual links `write[c] -> read[c]` from a node that writes residual channel c to every later
node that reads it (**[ours]**: later in forward order, so attention's write in layer L also
links to the MLP read of layer L), and query-key pairs (q[c] and k[c] of the same head channel
both kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..model import GPT
from ..nodes import NodeId, NodeLocation, site_name


@dataclass(frozen=True)
class Edge:
    src: NodeId
    dst: NodeId
    weight: float = 1.0  # residual links: 1


@dataclass
class EdgeCount:
    weights: list[Edge] = field(default_factory=list)  # the circuit's edges, the metric
    residual: list[Edge] = field(default_factory=list)  # residual links (weight 1)
    qk_pairs: list[tuple[NodeId, NodeId]] = field(default_factory=list)

    @property
    def num_edges(self) -> int:
        return len(self.weights)


def _nodes(layer: int, location: NodeLocation, keep: torch.Tensor) -> list[NodeId]:
    return [NodeId(layer, location, i) for i in keep.nonzero().squeeze(1).tolist()]


def _linear_edges(weight: torch.Tensor, src: list[NodeId], keep_src: torch.Tensor, dst: list[NodeId],
                  keep_dst: torch.Tensor) -> list[Edge]:
    # [ours] input columns past the source's width (concatenated position channels) are not edges
    sub = weight.detach()[:, : len(keep_src)][keep_dst][:, keep_src]
    return [Edge(src[i], dst[o], float(sub[o, i])) for o, i in sub.nonzero().tolist()]


def count_edges(model: GPT, keep: dict[str, torch.Tensor]) -> EdgeCount:
    """The edges among the kept nodes; `keep`: a boolean mask per node site."""
    out = EdgeCount()
    mask = lambda layer, loc: keep[site_name(layer, loc)]
    for layer, block in enumerate(model.blocks):
        for weight, src, dst in block.wiring():
            ks, kd = mask(layer, src), mask(layer, dst)
            out.weights += _linear_edges(weight, _nodes(layer, src, ks), ks, _nodes(layer, dst, kd), kd)
        both = mask(layer, NodeLocation.ATTN_Q) & mask(layer, NodeLocation.ATTN_K)
        out.qk_pairs += [(NodeId(layer, NodeLocation.ATTN_Q, c), NodeId(layer, NodeLocation.ATTN_K, c))
                         for c in both.nonzero().squeeze(1).tolist()]

    # Residual links: each write, to every read later in forward order.
    order = [(layer, loc) for layer in range(model.cfg.n_layer) for loc in NodeLocation
             if loc.reads_residual or loc.writes_residual]
    for i, (w_layer, w_loc) in enumerate(order):
        if not w_loc.writes_residual:
            continue
        for r_layer, r_loc in order[i + 1:]:
            if r_loc.reads_residual:
                w, r = mask(w_layer, w_loc), mask(r_layer, r_loc)
                n = min(len(w), len(r))  # input sites may carry position channels past d_model: no writer
                for c in (w[:n] & r[:n]).nonzero().squeeze(1).tolist():
                    out.residual.append(Edge(NodeId(w_layer, w_loc, c), NodeId(r_layer, r_loc, c)))
    return out
