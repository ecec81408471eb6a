"""Faithfulness checks of a circuit (SPEC section 7), all in numbers.

- sufficiency: task loss on held-out pairs with everything outside the circuit ablated;
- necessity: task loss of the full model with only the circuit's nodes ablated;
- random circuits: the same number of nodes per site, chosen at random;
- ablation sensitivity: the circuit's loss under zero, pretraining-mean and task-mean ablation;
- role drift: per kept node, the correlation of its activations in the pruned and in the full
  model over every token of the task prompts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..hooks import Hooks
from ..model import GPT
from ..tasks.evaluate import score_logit_diffs
from .masks import Ablation, keep_hooks
from ..tasks.evaluate import TaskTensors
from .prune import circuit_loss


@dataclass
class LossAcc:
    loss: float
    accuracy: float


@dataclass
class Validation:
    split: str
    full_model: LossAcc
    sufficiency: LossAcc
    necessity: LossAcc
    random_circuits: dict  # mean / min loss and mean accuracy over samples
    ablation_sensitivity: dict[str, float]
    role_drift: dict  # mean / min correlation, and per node
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _loss_acc(model, tt, keep, values, freeze_norms) -> LossAcc:
    _, diffs = circuit_loss(model, tt, keep, values, freeze_norms)
    loss, acc, _ = score_logit_diffs(diffs)
    return LossAcc(loss, acc)


def random_keep(keep: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for name, k in keep.items():
        m = torch.zeros_like(k)
        m[torch.randperm(len(k), generator=generator)[: int(k.sum())]] = True
        out[name] = m
    return out


@torch.no_grad()
def role_drift(model: GPT, tt: TaskTensors, keep: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> dict:
    """Correlation, per kept node, of its activation with and without the rest ablated."""
    names = [n for n, k in keep.items() if k.any()]
    full: dict[str, torch.Tensor] = {}
    pruned: dict[str, torch.Tensor] = {}
    model(tt.idx, Hooks().record(names, full), logits_at=tt.last)
    model(tt.idx, keep_hooks(keep, values).record(names, pruned), logits_at=tt.last)
    # Only real prompt tokens, not padding.
    valid = torch.arange(tt.idx.shape[1])[None, :] <= tt.last[:, None]
    per_node = {}
    for name in names:
        for i in keep[name].nonzero().squeeze(1).tolist():
            a = full[name][..., i][valid].double()
            b = pruned[name][..., i][valid].double()
            if a.std() == 0 or b.std() == 0:
                per_node[f"{name}:{i}"] = 1.0 if torch.allclose(a, b) else 0.0
            else:
                per_node[f"{name}:{i}"] = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    vals = list(per_node.values())
    return {"mean": sum(vals) / len(vals) if vals else None, "min": min(vals) if vals else None,
            "per_node": per_node}


def validate(model: GPT, tt: TaskTensors, keep: dict[str, torch.Tensor],
             ablation_values: dict[Ablation, dict[str, torch.Tensor]], ablation: Ablation,
             freeze_norms: bool = False, n_random: int = 10, seed: int = 0, split: str = "test") -> Validation:
    values = ablation_values[ablation]
    everything = {n: torch.ones_like(k) for n, k in keep.items()}
    complement = {n: ~k for n, k in keep.items()}
    g = torch.Generator().manual_seed(seed)
    randoms = [_loss_acc(model, tt, random_keep(keep, g), values, freeze_norms) for _ in range(n_random)]
    return Validation(
        split=split,
        full_model=_loss_acc(model, tt, everything, values, freeze_norms),
        sufficiency=_loss_acc(model, tt, keep, values, freeze_norms),
        necessity=_loss_acc(model, tt, complement, values, freeze_norms),
        random_circuits={"n": n_random, "mean_loss": sum(r.loss for r in randoms) / n_random,
                         "min_loss": min(r.loss for r in randoms),
                         "mean_accuracy": sum(r.accuracy for r in randoms) / n_random},
        ablation_sensitivity={kind.value: _loss_acc(model, tt, keep, v, freeze_norms).loss
                              for kind, v in ablation_values.items()},
        role_drift=role_drift(model, tt, keep, values),
    )
