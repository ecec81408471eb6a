"""The GPT: one forward pass, read top to bottom.

Pre-norm decoder-only transformer (SPEC section 2): RMSNorm, untied embeddings, biases on every
linear layer, small heads (d_head 16), an optional attention sink per head, an optional bigram
table added to the logits, optional positions (none, a learned table added to the embedding, or
read-only channels concatenated to every attention and MLP input). Each of the eight node
locations of a block passes through a `HookSite`, which applies AbsTopK and then the caller's `Hooks`;
so do each norm's 1/rms factor and the residual stream before each attention and MLP (where
bridges read and write, sparse_circuits/bridges).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import BigramTable, ModelConfig, Positions
from .hooks import Hooks, HookSite
from .kernels import SPARSE_DENSITY_THRESHOLD, SparseWeight, head_loss, sparse_linear, training_sparse_linear
from .nodes import NodeLocation, ResidualPoint, SiteKind, SiteName, site_name


def _site(cfg: ModelConfig, layer: int, loc: NodeLocation, width: int) -> HookSite:
    return HookSite(site_name(layer, loc), width, cfg.activation_topk.get(loc))


class Linear(nn.Linear):
    """nn.Linear that can also run from a frozen sparse copy of its weight.

    Evaluation, means, pruning and the report never change a trained model's weights, and a
    weight-sparse model's are almost all zero, so `GPT.use_sparse_weights` gives the sparse
    ones a CSR copy (kernels.SparseWeight) that skips the zeros. The dense product runs whenever
    the weight is being trained or was changed after the copy was made.
    """

    sparse: SparseWeight | None = None
    sparse_training_below: float = 0.0  # see GPT.use_sparse_training_products

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sparse
        training = self.weight.requires_grad and torch.is_grad_enabled()
        if s is not None and s.matches(self.weight) and not training:
            with torch.autocast(x.device.type, enabled=False):  # sparse products stay float32
                return sparse_linear(x.float(), s, self.bias)
        if training and self.sparse_training_below > 0.0 and \
                torch.count_nonzero(self.weight) < self.sparse_training_below * self.weight.numel():
            with torch.autocast(x.device.type, enabled=False):
                return training_sparse_linear(x.float(), self.weight, self.bias)
        return super().forward(x)


class RMSNorm(nn.Module):
    """x / rms(x) * gain. The per-token factor 1/rms(x) passes through its own hook site
    (`L.ln_1.scale`, `L.ln_2.scale`, `ln_f.scale`, width 1), so that pruning can freeze it to
    its value in the unpruned model (SPEC section 7, norm cheating)."""

    def __init__(self, d: int, name: str, eps: float | None = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps  # None: the dtype's machine epsilon, as torch.nn.RMSNorm (OpenAI's release)
        self.scale = HookSite(SiteName.norm_scale(name), 1, None, SiteKind.NORM_SCALE)

    def forward(self, x: torch.Tensor, hooks: Hooks | None) -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return x * self.scale(scale, hooks) * self.weight


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        d = cfg.d_model
        d_in = d + read_only_width(cfg)
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        # Separate q/k/v projections so every output row is one channel (one "unit").
        self.c_q, self.c_k, self.c_v = Linear(d_in, d), Linear(d_in, d), Linear(d_in, d)
        self.ln_pos = RMSNorm(cfg.d_pos, f"{layer}.ln_pos_1", cfg.norm_eps) if d_in > d else None
        self.c_proj = Linear(d, d)
        self.act_in = _site(cfg, layer, NodeLocation.ATTN_IN, input_site_width(cfg))
        self.q = _site(cfg, layer, NodeLocation.ATTN_Q, d)
        self.k = _site(cfg, layer, NodeLocation.ATTN_K, d)
        self.v = _site(cfg, layer, NodeLocation.ATTN_V, d)
        self.resid_delta = _site(cfg, layer, NodeLocation.ATTN_OUT, d)
        self.sink_logit = nn.Parameter(torch.zeros(self.n_head)) if cfg.attention_sink else None

    def forward(self, x: torch.Tensor, hooks: Hooks | None, pos: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        x = input_site(x, self.act_in, self.ln_pos, pos, hooks)
        q = self.q(self.c_q(x), hooks)
        k = self.k(self.c_k(x), hooks)
        v = self.v(self.c_v(x), hooks)
        q, k, v = (t.view(B, T, self.n_head, self.d_head).transpose(1, 2) for t in (q, k, v))
        y = attend(q, k, v, self.sink_logit)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.d_head)
        return self.resid_delta(self.c_proj(y), hooks)


def read_only_width(cfg: ModelConfig) -> int:
    """Extra input columns of c_q/c_k/c_v/c_fc: the concatenated position channels, if any."""
    return cfg.d_pos if cfg.positions == Positions.CONCAT else 0


def input_site_width(cfg: ModelConfig) -> int:
    """Width of the attention / MLP input sites: d_model, plus the position channels when they
    pass through the site (`positions_at_input_site`, OpenAI's released models)."""
    return cfg.d_model + (read_only_width(cfg) if cfg.positions_at_input_site else 0)


def input_site(x: torch.Tensor, site: HookSite, norm: "RMSNorm | None", pos: torch.Tensor | None,
               hooks: Hooks | None) -> torch.Tensor:
    """The block input through its site, with the normalised position channels appended: after
    the site (ours: read-only inputs), or before it when the site is wider than d_model
    (`positions_at_input_site`: AbsTopK selects over both, as in OpenAI's release)."""
    if norm is None:
        return site(x, hooks)
    p = norm(pos, hooks).expand(x.shape[0], -1, -1)
    if site.width > x.shape[-1]:
        return site(torch.cat([x, p], dim=-1), hooks)
    return torch.cat([site(x, hooks), p], dim=-1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sink_logit: torch.Tensor | None) -> torch.Tensor:
    """Causal attention; the sink is one extra key/value slot with k=0, v=0 and logit sink_logit[h].

    [ours] The sink is written so that the fused (flash) kernel still applies, which takes no
    additive mask: it becomes a real key at position 0 behind one extra channel, where every
    query holds a 1, the sink's key holds sink_logit / scale and all other keys and values a 0.
    A dummy query at position 0 keeps the causal mask aligned; its output is dropped.
    (`attention_pattern` below writes the same probabilities out plainly.)
    """
    if sink_logit is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    B, H, T, D = q.shape
    scale = 1 / math.sqrt(D)
    q = F.pad(q, (0, 1, 1, 0), value=1.0)
    k = F.pad(k, (0, 1, 1, 0))
    k[:, :, 0, D] = sink_logit.view(1, H).to(k.dtype) / scale
    v = F.pad(v, (0, 1, 1, 0))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)[:, :, 1:, :D]


def attention_pattern(q: torch.Tensor, k: torch.Tensor, sink_logit: torch.Tensor | None) -> torch.Tensor:
    """The probabilities `attend` uses, written out: (B, H, T, 1 + T), column 0 the sink's
    (0 without a sink). For looking at heads; the forward pass keeps the fused kernel."""
    B, H, T, D = q.shape
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    sink = (sink_logit.view(1, H, 1, 1).to(scores.dtype) if sink_logit is not None
            else scores.new_full((1, H, 1, 1), float("-inf")))
    return torch.cat([sink.expand(B, H, T, 1), scores], dim=-1).softmax(-1)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.c_fc = Linear(cfg.d_model + read_only_width(cfg), cfg.d_mlp)
        self.ln_pos = RMSNorm(cfg.d_pos, f"{layer}.ln_pos_2", cfg.norm_eps) if read_only_width(cfg) else None
        self.c_proj = Linear(cfg.d_mlp, cfg.d_model)
        self.act_in = _site(cfg, layer, NodeLocation.MLP_IN, input_site_width(cfg))
        self.post_act = _site(cfg, layer, NodeLocation.MLP_NEURON, cfg.d_mlp)
        self.resid_delta = _site(cfg, layer, NodeLocation.MLP_OUT, cfg.d_model)

    def forward(self, x: torch.Tensor, hooks: Hooks | None, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = input_site(x, self.act_in, self.ln_pos, pos, hooks)
        x = self.post_act(F.gelu(self.c_fc(x)), hooks)
        return self.resid_delta(self.c_proj(x), hooks)


class Block(nn.Module):
    # The block's weights as connections between node locations: channel j of `destination` is
    # computed from channel i of `source` through weight[j, i] (SPEC section 6). Circuit edges are
    # read from this table. Attention's output projection reads the value channels: attention mixes
    # positions, never channels. Input columns past the source's width (concatenated position
    # channels) are read-only inputs, not nodes.
    WIRING: tuple[tuple[str, NodeLocation, NodeLocation], ...] = (
        ("attn.c_q", NodeLocation.ATTN_IN, NodeLocation.ATTN_Q),
        ("attn.c_k", NodeLocation.ATTN_IN, NodeLocation.ATTN_K),
        ("attn.c_v", NodeLocation.ATTN_IN, NodeLocation.ATTN_V),
        ("attn.c_proj", NodeLocation.ATTN_V, NodeLocation.ATTN_OUT),
        ("mlp.c_fc", NodeLocation.MLP_IN, NodeLocation.MLP_NEURON),
        ("mlp.c_proj", NodeLocation.MLP_NEURON, NodeLocation.MLP_OUT),
    )

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.resid_pre = HookSite(SiteName.residual(layer, ResidualPoint.PRE), cfg.d_model, None, SiteKind.RESIDUAL)
        self.resid_mid = HookSite(SiteName.residual(layer, ResidualPoint.MID), cfg.d_model, None, SiteKind.RESIDUAL)
        self.ln_1 = RMSNorm(cfg.d_model, f"{layer}.ln_1", cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.ln_2 = RMSNorm(cfg.d_model, f"{layer}.ln_2", cfg.norm_eps)
        self.mlp = MLP(cfg, layer)

    def forward(self, x: torch.Tensor, hooks: Hooks | None, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = self.resid_pre(x, hooks)
        x = x + self.attn(self.ln_1(x, hooks), hooks, pos)
        x = self.resid_mid(x, hooks)
        return x + self.mlp(self.ln_2(x, hooks), hooks, pos)

    def wiring(self) -> list[tuple[torch.Tensor, NodeLocation, NodeLocation]]:
        """(weight, source, destination) for every entry of WIRING."""
        return [(self.get_submodule(path).weight, src, dst) for path, src, dst in self.WIRING]


class GPT(nn.Module):
    # The dtype of the matrix products (the run's `train.precision`; None: float32). Autocast keeps the
    # weights, the residual stream and the norms in float32; the loss's log-softmax is float32 too.
    compute_dtype: torch.dtype | None = None

    def __init__(self, cfg: ModelConfig, bigram_logprobs: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # Added positions are an embedding like wte (sparsified); concatenated ones are a plain
        # parameter, so the weight projection (which acts on nn.Linear / nn.Embedding) skips them.
        self.wpe = nn.Embedding(cfg.context, cfg.d_model) if cfg.positions == Positions.LEARNED else None
        self.pos_channels = (nn.Parameter(torch.randn(cfg.context, cfg.d_pos) * cfg.init_std)
                             if cfg.positions == Positions.CONCAT else None)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = RMSNorm(cfg.d_model, "ln_f", cfg.norm_eps)
        self.lm_head = Linear(cfg.d_model, cfg.vocab_size)
        self._init_weights()
        table = torch.zeros(cfg.vocab_size, cfg.vocab_size)
        if bigram_logprobs is not None:
            table.copy_(bigram_logprobs)
        if cfg.bigram_table == BigramTable.FIXED:
            self.register_buffer("bigram", table)
        elif cfg.bigram_table == BigramTable.LEARNABLE:
            self.bigram = nn.Parameter(table)
        else:
            self.bigram = None

    def _init_weights(self) -> None:
        std = self.cfg.init_std
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                residual_write = name.endswith("c_proj")
                nn.init.normal_(module.weight, 0.0, std / math.sqrt(2 * self.cfg.n_layer) if residual_write else std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, hooks: Hooks | None = None,
                logits_at: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab); with `logits_at` (B,) only at one position per row: (B, vocab);
        with `targets` (B, T) the mean next-token loss instead of the logits.

        Tasks read one position per prompt, and the unembedding is the largest matrix product at
        small d_model, so they ask for just that position. Training asks for the loss, which
        `kernels.head_loss` computes from the same weights without holding all logits at once.
        """
        T = idx.shape[1]
        if T > self.cfg.context:
            raise ValueError(f"sequence length {T} exceeds the model's context {self.cfg.context}")
        if self.compute_dtype is not None:
            with torch.autocast(idx.device.type, dtype=self.compute_dtype):
                return self._forward(idx, hooks, logits_at, targets)
        return self._forward(idx, hooks, logits_at, targets)

    def _forward(self, idx: torch.Tensor, hooks: Hooks | None, logits_at: torch.Tensor | None,
                 targets: torch.Tensor | None) -> torch.Tensor:
        T = idx.shape[1]
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        pos = self.pos_channels[None, :T] if self.pos_channels is not None else None
        for block in self.blocks:
            x = block(x, hooks, pos)
        current = idx
        if logits_at is not None:
            rows = torch.arange(idx.shape[0], device=idx.device)
            x, current = x[rows, logits_at], idx[rows, logits_at]
        x = self.ln_f(x, hooks)
        if targets is not None:
            return head_loss(x, self.lm_head, self.bigram, current, targets, self.compute_dtype)
        logits = self.lm_head(x).float()
        if self.bigram is not None:
            logits = logits + self.bigram[current]
        return logits

    # -- introspection -------------------------------------------------------------------------

    def hook_sites(self) -> dict[str, HookSite]:
        """Every hook site (node locations, norm scales, residual stream), in module order."""
        return {m.name: m for m in self.modules() if isinstance(m, HookSite)}

    def node_sites(self) -> dict[str, HookSite]:
        """The eight node locations of every layer, in forward order."""
        return self._sites(SiteKind.NODE)

    def norm_sites(self) -> dict[str, HookSite]:
        """The per-token 1/rms factor of every norm (`L.ln_1.scale`, ..., `ln_f.scale`)."""
        return self._sites(SiteKind.NORM_SCALE)

    def residual_sites(self) -> dict[str, HookSite]:
        """The residual stream before each attention (`L.resid_pre`; 0.resid_pre is the embedding)
        and before each MLP (`L.resid_mid`), in forward order: where bridges attach."""
        return self._sites(SiteKind.RESIDUAL)

    def _sites(self, kind: SiteKind) -> dict[str, HookSite]:
        return {name: site for name, site in self.hook_sites().items() if site.kind == kind}

    def run_with_hooks(self, idx: torch.Tensor, hooks: Hooks) -> torch.Tensor:
        hooks.check_names(self.hook_sites())
        return self(idx, hooks)

    def run_with_cache(self, idx: torch.Tensor, names: list[str] | None = None,
                       hooks: Hooks | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the activations at the named sites (all node sites if names is None)."""
        cache: dict[str, torch.Tensor] = {}
        hooks = hooks if hooks is not None else Hooks()
        hooks.record(list(self.node_sites()) if names is None else names, cache)
        return self.run_with_hooks(idx, hooks), cache

    @torch.no_grad()
    def use_sparse_weights(self, threshold: float = SPARSE_DENSITY_THRESHOLD) -> list[str]:
        """From now on run every linear layer whose weight has a nonzero fraction below
        `threshold` from a sparse copy (for a frozen model; 0 turns it off). Returns their names."""
        chosen = []
        for name, module in self.named_modules():
            if isinstance(module, Linear):
                density = float(torch.count_nonzero(module.weight)) / module.weight.numel()
                module.sparse = SparseWeight(module.weight) if density < threshold else None
                if module.sparse is not None:
                    chosen.append(name)
        return chosen

    def use_sparse_training_products(self, below: float) -> None:
        """While training, run each linear layer (not the unembedding, which the fused head loss
        multiplies) whose weight's nonzero fraction is below `below` with sparse forward and
        input-gradient products; its weight gradient stays dense. 0 turns it off."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.sparse_training_below = below

    def sparsified_parameters(self) -> dict[str, nn.Parameter]:
        """Every tensor the weight projection acts on: linear weights and biases, embeddings.

        Not norm gains, sink logits or the bigram table (SPEC section 3).
        """
        out = {}
        for mod_name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                for p_name, p in module.named_parameters(recurse=False):
                    out[f"{mod_name}.{p_name}"] = p
        return out

