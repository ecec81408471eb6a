"""Node masks (SPEC section 6): one learnable tau per node, gate = Heaviside(tau) forward,
sigmoid(tau / T) / T derivative backward. A kept node passes its value; a removed node is
replaced by its ablation value mu (circuits/ablations.py: a mean, zero, a fitted constant, or its
value on another context) at every position of every prompt: value = gate * x + (1 - gate) * mu. Masks plug into the model's hook sites.
"""

from __future__ import annotations

import enum

import torch
from torch import nn

from ..errors import UserError
from ..hooks import Hooks
from ..model import GPT
from ..nodes import NodeId, NodeLocation, parse_site, site_name


class Ablation(str, enum.Enum):
    MEAN_PRETRAIN = "mean-pretrain"
    MEAN_TASK = "mean-task"
    ZERO = "zero"
    RESAMPLE = "resample"
    OPTIMAL = "optimal"


class HeavisideSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tau: torch.Tensor, temperature: float) -> torch.Tensor:
        ctx.save_for_backward(tau)
        ctx.temperature = temperature
        return (tau > 0).to(tau.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (tau,) = ctx.saved_tensors
        s = torch.sigmoid(tau / ctx.temperature)
        return grad * s * (1 - s) / ctx.temperature, None


def mean_ablate(x: torch.Tensor, gate: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    return gate * x + (1 - gate) * mu


def shared_site(name: str, tie_qk: bool) -> str:
    """The site whose tau a site uses: with tied query/key masks, `L.attn.k` uses `L.attn.q`'s."""
    layer, location = parse_site(name)
    return site_name(layer, NodeLocation.ATTN_Q) if tie_qk and location == NodeLocation.ATTN_K else name


class NodeMasks(nn.Module):
    """The taus of every node site of a model (one shared tau per q/k channel when tied)."""

    def __init__(self, model: GPT, tie_qk: bool = False, init_mean: float = 0.1, init_std: float = 0.01,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.tie_qk = tie_qk
        self.widths = {name: site.width for name, site in model.node_sites().items()}
        self.tau = nn.ParameterDict()
        for name, width in self.widths.items():
            if shared_site(name, tie_qk) == name:
                init = init_mean + init_std * torch.randn(width, generator=generator)
                self.tau[_key(name)] = nn.Parameter(init)
        self.allowed: dict[str, torch.Tensor] | None = None  # see forbid

    def forbid(self, nodes: list[NodeId]) -> None:
        """Never keep `nodes` (the backup search): their gates stay 0 and no circuit ranks them."""
        self.allowed = {name: ~k for name, k in self.keep_masks(nodes).items()} if nodes else None

    def tau_of(self, name: str) -> torch.Tensor:
        return self.tau[_key(shared_site(name, self.tie_qk))]

    def gates(self, temperature: float) -> dict[str, torch.Tensor]:
        gates = {name: HeavisideSTE.apply(self.tau_of(name), temperature) for name in self.widths}
        if self.allowed is not None:
            gates = {name: g * self.allowed[name] for name, g in gates.items()}
        return gates

    def clamp_(self) -> None:
        with torch.no_grad():
            for p in self.tau.values():
                p.clamp_(-1.0, 1.0)

    def num_kept_surrogate(self, temperature: float) -> torch.Tensor:
        """Number of kept nodes, counted once per tau; differentiable through the surrogate."""
        return sum(HeavisideSTE.apply(p, temperature).sum() for p in self.tau.values())

    def ranked_nodes(self) -> list[NodeId]:
        """Every node owning a tau, highest tau first (ties by site order, then index)."""
        entries = []
        for name in self.widths:
            if shared_site(name, self.tie_qk) != name:
                continue
            for i, t in enumerate(self.tau_of(name).detach().tolist()):
                if self.allowed is None or self.allowed[name][i]:
                    entries.append((-t, len(entries), NodeId.at(name, i)))
        entries.sort(key=lambda e: e[:2])
        return [node for _, _, node in entries]

    def keep_masks(self, nodes: list[NodeId]) -> dict[str, torch.Tensor]:
        """Boolean keep mask per node site for a set of tau-owning nodes (a tied key site follows its query)."""
        keep = keep_masks(nodes, self.widths)
        if self.tie_qk:
            for name in self.widths:
                if shared_site(name, True) != name:
                    keep[name] = keep[shared_site(name, True)].clone()
        return keep


def keep_masks(nodes: list[NodeId], widths: dict[str, int]) -> dict[str, torch.Tensor]:
    """Boolean keep mask per node site (`widths`: site -> number of nodes) with `nodes` set."""
    keep = {name: torch.zeros(w, dtype=torch.bool) for name, w in widths.items()}
    for node in nodes:
        if node.site not in keep or not 0 <= node.index < widths[node.site]:
            why = "no such site" if node.site not in keep else f"the site has {widths[node.site]} channels"
            raise UserError(f"circuit node {node}: this model has no such node ({why}); the circuit belongs to "
                            "another model, or its file was edited")
        keep[node.site][node.index] = True
    return keep


def _key(site: str) -> str:
    return site.replace(".", "__")


def gate_hooks(gates: dict[str, torch.Tensor], ablation_values: dict[str, torch.Tensor],
               hooks: Hooks | None = None) -> Hooks:
    """Hooks that apply value = gate * x + (1 - gate) * mu at every node site."""
    hooks = hooks if hooks is not None else Hooks()
    for name, gate in gates.items():
        mu = ablation_values[name]
        hooks.add(name, lambda x, g=gate, m=mu: mean_ablate(x, g.to(x.dtype), m.to(x.device, x.dtype)))
    return hooks


def frozen_norm_hooks(model: GPT, idx: torch.Tensor, hooks: Hooks | None = None,
                      logits_at: torch.Tensor | None = None) -> Hooks:
    """Hooks that fix every norm's 1/rms factor to its value in the unpruned model on `idx`
    (`logits_at` as in the forward they will serve)."""
    norm_sites = list(model.norm_sites())
    store: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        model(idx, Hooks().record(norm_sites, store), logits_at=logits_at)
    hooks = hooks if hooks is not None else Hooks()
    for name in norm_sites:
        hooks.add(name, lambda s, v=store[name]: v)
    return hooks
