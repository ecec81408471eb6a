"""Bridges between a frozen dense model and a weight-sparse one (SPEC section 9; paper 2.3, A.3).

One bridge per residual site (`L.resid_pre`: before attention, 0.resid_pre being the embedding;
`L.resid_mid`: before the MLP): an encoder dense -> sparse (linear + AbsTopK) and a decoder
sparse -> dense (linear). The sparse model and the bridges train together on

    L = LM(sparse) + nmse_coef * sum_sites [NMSE(dec(h_s), h_d) + NMSE(enc(h_d), h_s)]
                   + kl_coef * sum_sites [KL(dense || dense->sparse hybrid) + KL(dense || sparse->dense hybrid)]

where a dense->sparse hybrid runs the sparse model with its residual at one site replaced by
enc(dense residual there), and a sparse->dense hybrid runs the dense model with its residual at
one site replaced by dec(sparse residual there). Every hybrid is the one forward pass of
model.py with a replacement hook at that site: no block computation is copied.

[ours] NMSE(pred, target) = mean squared error / mean squared deviation of the target from its
mean over tokens (the fraction of variance unexplained); the normaliser carries no gradient, so
the sparse model cannot shrink its residual to make the encoder's task easier. KL and NMSE are
means over tokens, like the LM loss. Bridges start from PyTorch's default linear init.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from ..data import DataSplit, TokenData
from ..errors import UserError
from ..fileio import read_json
from ..hooks import Hooks, abs_topk
from ..model import GPT
from ..train import Objective

BRIDGES_NAME = "bridges"  # RUN_DIR/bridges.safetensors (and in every checkpoint)


@dataclass
class BridgeConfig:
    encoder_topk: float = 0.25  # AbsTopK fraction of the encoder's output [ours: the paper's activation fraction]
    nmse_coef: float = 1.0  # [ours] weights of the bridge terms next to the LM loss
    kl_coef: float = 1.0
    # [ours] switch points per direction per step: 0 = every site (the exact sum); k > 0 = k sites drawn
    # from (seed, step), their KL scaled up to estimate the sum (cheaper: each switch is a forward pass)
    switches_per_step: int = 0
    eval_batches: int = 4  # validation batches for the bridge quality numbers
    # [ours] the bridges' learning rate over the model's: they map between residual streams of very
    # different scales, starting from zero (a first micro run at 1x learned nothing in 300 steps)
    lr_mult: float = 10.0

    def validate(self) -> "BridgeConfig":
        if not 0.0 < self.encoder_topk <= 1.0:
            raise UserError(f"bridge.encoder_topk must be in (0, 1], got {self.encoder_topk}")
        for name in ("nmse_coef", "kl_coef", "lr_mult"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise UserError(f"bridge.{name} must be a finite number >= 0, got {v}")
        if self.switches_per_step < 0:
            raise UserError(f"bridge.switches_per_step must be >= 0, got {self.switches_per_step}")
        if self.eval_batches < 1:
            raise UserError(f"bridge.eval_batches must be >= 1, got {self.eval_batches}")
        return self


def _key(site: str) -> str:
    return site.replace(".", "_")  # module names cannot hold dots


class Bridges(nn.Module):
    """An encoder and a decoder at every residual site."""

    def __init__(self, sites: list[str], d_dense: int, d_sparse: int, encoder_topk: float):
        super().__init__()
        self.sites = list(sites)
        self.k = max(1, math.floor(encoder_topk * d_sparse))
        self.encoders = nn.ModuleDict({_key(s): nn.Linear(d_dense, d_sparse) for s in self.sites})
        self.decoders = nn.ModuleDict({_key(s): nn.Linear(d_sparse, d_dense) for s in self.sites})
        # [ours] bridges start at zero: every NMSE starts near 1 and no hybrid starts from a random map
        # whose scale (the dense residual is far larger than a fresh sparse one) swamps the gradient.
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()

    def encode(self, site: str, h_dense: torch.Tensor) -> torch.Tensor:
        """Dense residual -> sparse residual (linear, then AbsTopK)."""
        return abs_topk(self.encoders[_key(site)](h_dense), self.k)

    def decode(self, site: str, h_sparse: torch.Tensor) -> torch.Tensor:
        """Sparse residual -> dense residual (linear)."""
        return self.decoders[_key(site)](h_sparse)

    def decoder_weight(self, site: str) -> torch.Tensor:
        return self.decoders[_key(site)].weight


def nmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained: MSE over the target's variance around its mean (no gradient
    through the normaliser)."""
    flat = target.reshape(-1, target.shape[-1])
    var = (flat - flat.mean(0)).pow(2).sum(-1).mean().detach().clamp_min(1e-12)
    return (pred - target).pow(2).sum(-1).mean() / var


def kl_from_dense(dense_logits: torch.Tensor, hybrid_logits: torch.Tensor) -> torch.Tensor:
    """KL(dense || hybrid), mean over tokens."""
    p_log = dense_logits.log_softmax(-1)
    return (p_log.exp() * (p_log - hybrid_logits.log_softmax(-1))).sum(-1).mean()


def replace_at(site: str, value: torch.Tensor) -> Hooks:
    """Hooks that put `value` in place of the residual at `site`."""
    return Hooks().add(site, lambda _x: value)


@dataclass
class BridgeTerms:
    """One batch's loss terms (tensors, for backward) by switch site."""

    lm: torch.Tensor
    nmse_to_dense: dict[str, torch.Tensor] = field(default_factory=dict)  # NMSE(dec(h_s), h_d)
    nmse_to_sparse: dict[str, torch.Tensor] = field(default_factory=dict)  # NMSE(enc(h_d), h_s)
    kl_dense_to_sparse: dict[str, torch.Tensor] = field(default_factory=dict)  # switch via an encoder
    kl_sparse_to_dense: dict[str, torch.Tensor] = field(default_factory=dict)  # switch via a decoder
    loss_dense_to_sparse: dict[str, float] = field(default_factory=dict)  # hybrids' LM loss (evaluation)
    loss_sparse_to_dense: dict[str, float] = field(default_factory=dict)


class Bridged(Objective):
    """The sparse model and its bridges as one trainable module (so data-parallel training wraps
    both); the frozen dense model rides along outside the module tree (never trained or saved)."""

    def __init__(self, sparse: GPT, bridges: Bridges, dense: GPT, cfg: BridgeConfig, seed: int = 0):
        super().__init__()
        self.sparse, self.bridges, self.cfg, self.seed = sparse, bridges, cfg, seed
        object.__setattr__(self, "dense", dense)
        self.step_index = 0  # which step's switch sites to draw (set by the trainer)
        self.last_quality: BridgeQuality | None = None

    def extra_modules(self) -> dict[str, nn.Module]:
        return {BRIDGES_NAME: self.bridges}

    def lr_mults(self) -> dict[str, float]:
        return {BRIDGES_NAME: self.cfg.lr_mult}

    def eval_metrics(self, data: TokenData, cfg: RunConfig) -> dict:
        t = cfg.train
        batches = [data.batch(DataSplit.VAL, t.batch_size, cfg.model.context, t.seed, i)
                   for i in range(self.cfg.eval_batches)]
        was = self.training
        self.eval()
        device = next(self.sparse.parameters()).device
        self.last_quality = bridge_quality(self, [(x.to(device), y.to(device)) for x, y in batches])
        self.train(was)
        return {"bridges": self.last_quality.as_dict()}

    def switch_sites(self, step: int) -> list[str]:
        k = self.cfg.switches_per_step
        sites = self.bridges.sites
        if k == 0 or k >= len(sites):
            return sites
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return [sites[i] for i in sorted(torch.randperm(len(sites), generator=g)[:k].tolist())]

    def terms(self, x: torch.Tensor, y: torch.Tensor, sites: list[str], with_hybrid_losses: bool = False) -> BridgeTerms:
        all_sites = self.bridges.sites
        dense_res: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            dense_logits = self.dense(x, Hooks().record(all_sites, dense_res))
        sparse_res: dict[str, torch.Tensor] = {}
        lm = self.sparse(x, Hooks().record(all_sites, sparse_res), targets=y)
        t = BridgeTerms(lm)
        for s in all_sites:
            t.nmse_to_dense[s] = nmse(self.bridges.decode(s, sparse_res[s]), dense_res[s])
            # [ours] the sparse residual is the encoder's target only: pulled towards a fresh encoder's
            # output it collapsed (first micro run: NMSE 1 -> 16 in 300 steps while the LM loss stalled)
            t.nmse_to_sparse[s] = nmse(self.bridges.encode(s, dense_res[s]), sparse_res[s].detach())
        for s in sites:
            hybrid = self.sparse(x, replace_at(s, self.bridges.encode(s, dense_res[s])))
            t.kl_dense_to_sparse[s] = kl_from_dense(dense_logits, hybrid)
            if with_hybrid_losses:
                t.loss_dense_to_sparse[s] = float(F.cross_entropy(hybrid.flatten(0, 1), y.flatten()))
            hybrid = self.dense(x, replace_at(s, self.bridges.decode(s, sparse_res[s])))
            t.kl_sparse_to_dense[s] = kl_from_dense(dense_logits, hybrid)
            if with_hybrid_losses:
                t.loss_sparse_to_dense[s] = float(F.cross_entropy(hybrid.flatten(0, 1), y.flatten()))
        return t

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training objective (the sum above) for one batch."""
        sites = self.switch_sites(self.step_index)
        t = self.terms(x, targets, sites)
        scale = len(self.bridges.sites) / len(sites)  # drawn switch points estimate the sum over all
        bridge_nmse = sum(t.nmse_to_dense.values()) + sum(t.nmse_to_sparse.values())
        bridge_kl = (sum(t.kl_dense_to_sparse.values()) + sum(t.kl_sparse_to_dense.values())) * scale
        return t.lm + self.cfg.nmse_coef * bridge_nmse + self.cfg.kl_coef * bridge_kl


@dataclass
class BridgeQuality:
    """How well the bridges translate, on validation batches (RUN_DIR/bridge_quality.json). Per
    residual site: NMSE both ways; per switch point: the hybrid forward's KL from the dense model
    and its LM loss; and the two models' own losses."""
    nmse_sparse_to_dense: dict[str, float]
    nmse_dense_to_sparse: dict[str, float]
    kl_dense_to_sparse: dict[str, float]
    kl_sparse_to_dense: dict[str, float]
    loss_dense_to_sparse: dict[str, float]
    loss_sparse_to_dense: dict[str, float]
    sparse_loss: float
    dense_loss: float

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> BridgeQuality:
        try:
            return cls(**d)
        except TypeError as e:
            raise UserError(f"{where}: not a bridge quality record ({e}); train the bridges again") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> BridgeQuality:
        return cls.from_dict(read_json(path, "bridge quality"), str(path))


@torch.no_grad()
def bridge_quality(bridged: Bridged, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> BridgeQuality:
    """Per site: NMSE both ways; per switch point: hybrid KL and hybrid LM loss; and the two
    models' own losses, averaged over `batches` (validation data)."""
    sites = bridged.bridges.sites
    sums: dict[str, dict[str, float]] = {k: {s: 0.0 for s in sites} for k in (
        "nmse_sparse_to_dense", "nmse_dense_to_sparse", "kl_dense_to_sparse", "kl_sparse_to_dense",
        "loss_dense_to_sparse", "loss_sparse_to_dense")}
    own = {"sparse_loss": 0.0, "dense_loss": 0.0}
    for x, y in batches:
        t = bridged.terms(x, y, sites, with_hybrid_losses=True)
        for s in sites:
            sums["nmse_sparse_to_dense"][s] += float(t.nmse_to_dense[s])
            sums["nmse_dense_to_sparse"][s] += float(t.nmse_to_sparse[s])
            sums["kl_dense_to_sparse"][s] += float(t.kl_dense_to_sparse[s])
            sums["kl_sparse_to_dense"][s] += float(t.kl_sparse_to_dense[s])
            sums["loss_dense_to_sparse"][s] += t.loss_dense_to_sparse[s]
            sums["loss_sparse_to_dense"][s] += t.loss_sparse_to_dense[s]
        own["sparse_loss"] += float(t.lm)
        own["dense_loss"] += float(bridged.dense(x, targets=y))
    n = len(batches)
    return BridgeQuality(**{k: {s: v / n for s, v in d.items()} for k, d in sums.items()},
                         **{k: v / n for k, v in own.items()})
