"""Earlier methods, kept outside the library only as baselines that benchmarks and tests compare with."""

from __future__ import annotations

import torch

from sparse_circuits.sparsity import keep_count


@torch.no_grad()
def project_naive_(weight: torch.Tensor, frac: float, min_per_unit: int = 4) -> torch.Tensor:
    """The earlier reimplementation's projection: one global top-k, then the top `min_per_unit` of each row."""
    a = weight.abs()
    k = keep_count(frac, a.numel())
    mask = torch.zeros(a.numel(), dtype=torch.bool)
    mask[torch.topk(a.reshape(-1), k).indices] = True
    mask = mask.view_as(a)
    if a.dim() >= 2:
        rows = torch.topk(a, min(min_per_unit, a.shape[1]), dim=1).indices
        mask.scatter_(1, rows, True)
    weight.mul_(mask)
    return mask
