"""Edges of a circuit (SPEC section 6): nonzero weights between two kept nodes.

Counted, per layer L:
  L.attn.act_in[i] -> L.attn.q/k/v[j]     c_q/c_k/c_v.weight[j, i]
  L.attn.v[j]      -> L.attn.resid_delta[o]  attn.c_proj.weight[o, j]  (value channel = output channel)
  L.mlp.act_in[i]  -> L.mlp.post_act[j]   c_fc.weight[j, i]
  L.mlp.post_act[j] -> L.mlp.resid_delta[o]  mlp.c_proj.weight[o, j]
Reported separately: residual links `resid_delta[c] -> act_in[c]` from a write to every later
read of the same channel (**[ours]**: later in forward order, so attention's write in layer L
also links to the MLP read of layer L), and query-key pairs (q[c] and k[c] of the same head
channel both kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..model import GPT


@dataclass
class Edge:
    src: str  # "site:index"
    dst: str
    weight: float


@dataclass
class EdgeCount:
    weights: list[Edge] = field(default_factory=list)  # the circuit's edges, the metric
    residual: list[Edge] = field(default_factory=list)  # residual links (weight 1)
    qk_pairs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_edges(self) -> int:
        return len(self.weights)


def _linear_edges(weight: torch.Tensor, src: str, keep_src: torch.Tensor, dst: str,
                  keep_dst: torch.Tensor) -> list[Edge]:
    sub = weight.detach()[keep_dst][:, keep_src]
    src_idx = keep_src.nonzero().squeeze(1).tolist()
    dst_idx = keep_dst.nonzero().squeeze(1).tolist()
    return [Edge(f"{src}:{src_idx[i]}", f"{dst}:{dst_idx[o]}", float(sub[o, i]))
            for o, i in sub.nonzero().tolist()]


def count_edges(model: GPT, keep: dict[str, torch.Tensor]) -> EdgeCount:
    out = EdgeCount()
    n_layer = model.cfg.n_layer
    d = model.cfg.d_model  # [ours] reads of concatenated position channels (columns past d) are not edges
    for layer, block in enumerate(model.blocks):
        site = lambda s: f"{layer}.{s}"
        for proj, dst in ((block.attn.c_q, "attn.q"), (block.attn.c_k, "attn.k"), (block.attn.c_v, "attn.v")):
            out.weights += _linear_edges(proj.weight[:, :d], site("attn.act_in"), keep[site("attn.act_in")],
                                         site(dst), keep[site(dst)])
        out.weights += _linear_edges(block.attn.c_proj.weight, site("attn.v"), keep[site("attn.v")],
                                     site("attn.resid_delta"), keep[site("attn.resid_delta")])
        out.weights += _linear_edges(block.mlp.c_fc.weight[:, :d], site("mlp.act_in"), keep[site("mlp.act_in")],
                                     site("mlp.post_act"), keep[site("mlp.post_act")])
        out.weights += _linear_edges(block.mlp.c_proj.weight, site("mlp.post_act"), keep[site("mlp.post_act")],
                                     site("mlp.resid_delta"), keep[site("mlp.resid_delta")])
        both = (keep[site("attn.q")] & keep[site("attn.k")]).nonzero().squeeze(1).tolist()
        out.qk_pairs += [(f"{site('attn.q')}:{c}", f"{site('attn.k')}:{c}") for c in both]

    # Residual links: each write, to every read later in forward order.
    order = [f"{layer}.{s}" for layer in range(n_layer)
             for s in ("attn.act_in", "attn.resid_delta", "mlp.act_in", "mlp.resid_delta")]
    for i, write in enumerate(order):
        if not write.endswith("resid_delta"):
            continue
        for read in order[i + 1:]:
            if read.endswith("act_in"):
                for c in (keep[write] & keep[read]).nonzero().squeeze(1).tolist():
                    out.residual.append(Edge(f"{write}:{c}", f"{read}:{c}", 1.0))
    return out
