"""What a removed node takes: one constant per node (zero, a mean, a fitted constant), its value
on another input (resampling), or, for some nodes, its own value (the complement check). `CircuitIntervention` asks `values_for(values, model, idx)` at every
forward, so pruning, validation and the report treat both alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..model import GPT


class BatchValues:
    """Values that depend on the forward's input: `for_batch(model, idx, last)` gives them per site."""

    def for_batch(self, model: GPT, idx: torch.Tensor, last: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass
class ResampledValues(BatchValues):
    """Resample ablation: each example's removed nodes take their values from the whole model run on
    another pretraining context, at the same positions (the causal-scrubbing-style condition).

    The context is drawn per example from a fixed pool of pretraining windows by a hash of the
    example's tokens (up to its last position: not the padding its batch happens to have) and
    `seed`: the same example always gets the same context (validation is reproducible), different
    examples get different ones.
    """
    pool: torch.Tensor  # (windows, context) token ids of pretraining text
    seed: int = 0

    def draw(self, idx: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """The pool row each example of `idx` (batch, T; its prompt ends at `last`) resamples from."""
        ends = [idx.shape[1] - 1] * idx.shape[0] if last is None else last.tolist()
        out = []
        for row, end in zip(idx.detach().cpu().numpy(), ends):
            h = hashlib.blake2b(row[: end + 1].tobytes(), digest_size=8, key=self.seed.to_bytes(8, "little"))
            out.append(int.from_bytes(h.digest(), "little") % self.pool.shape[0])
        return torch.tensor(out, dtype=torch.long)

    @torch.no_grad()
    def for_batch(self, model: GPT, idx: torch.Tensor, last: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        other = self.pool[self.draw(idx, last), : idx.shape[1]].to(idx.device)
        _, cache = model.run_with_cache(other)
        return cache


# Constants per node site ((width,) tensors), or values computed per input.
NodeValues = dict[str, torch.Tensor] | BatchValues


def values_for(values: NodeValues, model: GPT, idx: torch.Tensor,
               last: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per node site, what the removed nodes of a forward on `idx` take (broadcastable to the site);
    `last`: each row's last prompt position, when rows are padded."""
    return values.for_batch(model, idx, last) if isinstance(values, BatchValues) else values


@dataclass
class RestoredValues(BatchValues):
    """Removed nodes take `base`'s values, except the `restore`d ones, which take the whole model's
    own activations on the same input (validate's complement check: parts of the rest restored)."""
    base: NodeValues
    restore: dict[str, torch.Tensor]  # per node site, (width,) bool

    @torch.no_grad()
    def for_batch(self, model: GPT, idx: torch.Tensor, last: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        base = values_for(self.base, model, idx, last)
        _, clean = model.run_with_cache(idx)
        return {n: torch.where(self.restore[n].to(clean[n].device), clean[n], base[n].to(clean[n].dtype))
                for n in clean}
