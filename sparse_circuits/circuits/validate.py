"""Faithfulness checks of a circuit (SPEC section 7), all in numbers.

- sufficiency: task loss on held-out pairs with everything outside the circuit ablated;
- necessity: task loss of the full model with only the circuit's nodes ablated;
- random circuits: the same number of nodes per site, chosen at random;
- ablation sensitivity: the circuit's loss under zero, pretraining-mean and task-mean ablation;
- role drift: per kept node, the correlation of its activations in the pruned and in the full
  model over every token of the task prompts.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch

from ..errors import UserError
from ..fileio import read_json, write_json
from ..hooks import Hooks
from ..model import GPT
from ..nodes import NodeId
from ..tasks import Split
from ..tasks.evaluate import TaskTensors, score_logit_diffs
from .circuit import VALIDATION_FILE
from .intervention import CircuitIntervention
from .masks import Ablation
from .values import NodeValues



@dataclass
class LossAcc:
    loss: float
    accuracy: float


@dataclass
class RandomCircuits:
    n: int
    mean_loss: float
    min_loss: float
    mean_accuracy: float


@dataclass
class RoleDrift:
    mean: float | None  # None: the circuit has no nodes
    min: float | None
    per_node: dict[str, float]  # str(NodeId) -> correlation


@dataclass
class Validation:
    split: Split
    full_model: LossAcc
    sufficiency: LossAcc
    necessity: LossAcc
    random_circuits: RandomCircuits
    ablation_sensitivity: dict[Ablation, float]
    role_drift: RoleDrift
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["split"] = self.split.value
        d["ablation_sensitivity"] = {k.value: v for k, v in self.ablation_sensitivity.items()}
        return d

    def save(self, circuit_dir: str | os.PathLike) -> None:
        write_json(os.path.join(circuit_dir, VALIDATION_FILE), self.as_dict())

    @classmethod
    def load(cls, circuit_dir: str | os.PathLike) -> "Validation":
        path = os.path.join(circuit_dir, VALIDATION_FILE)
        d = read_json(path, "validation")
        try:
            return cls(split=Split(d["split"]), full_model=LossAcc(**d["full_model"]),
                       sufficiency=LossAcc(**d["sufficiency"]), necessity=LossAcc(**d["necessity"]),
                       random_circuits=RandomCircuits(**d["random_circuits"]),
                       ablation_sensitivity={Ablation(k): v for k, v in d["ablation_sensitivity"].items()},
                       role_drift=RoleDrift(**d["role_drift"]), notes=list(d.get("notes", [])))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: damaged validation file ({type(e).__name__}: {e}); "
                            "run `sparse-circuits validate` again") from None


def _loss_acc(model: GPT, tt: TaskTensors, circuit: CircuitIntervention) -> LossAcc:
    _, diffs = circuit.task_loss(model, tt)
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
def role_drift(model: GPT, tt: TaskTensors, keep: dict[str, torch.Tensor], circuit: CircuitIntervention) -> RoleDrift:
    """Correlation, per kept node, of its activation with and without the rest ablated."""
    names = [n for n, k in keep.items() if k.any()]
    full: dict[str, torch.Tensor] = {}
    pruned: dict[str, torch.Tensor] = {}
    model(tt.idx, Hooks().record(names, full), logits_at=tt.last)
    model(tt.idx, circuit.hooks(model, tt.idx, tt.last).record(names, pruned), logits_at=tt.last)
    # Only real prompt tokens, not padding.
    valid = torch.arange(tt.idx.shape[1])[None, :] <= tt.last[:, None]
    per_node = {}
    for name in names:
        for i in keep[name].nonzero().squeeze(1).tolist():
            a = full[name][..., i][valid].double()
            b = pruned[name][..., i][valid].double()
            key = str(NodeId.at(name, i))
            if a.std() == 0 or b.std() == 0:
                per_node[key] = 1.0 if torch.allclose(a, b) else 0.0
            else:
                per_node[key] = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    vals = list(per_node.values())
    return RoleDrift(sum(vals) / len(vals) if vals else None, min(vals) if vals else None, per_node)


def validate(model: GPT, tt: TaskTensors, keep: dict[str, torch.Tensor],
             ablation_values: dict[Ablation, NodeValues], ablation: Ablation,
             freeze_norms: bool = False, n_random: int = 10, seed: int = 0, split: Split = Split.TEST) -> Validation:
    """`ablation_values[ablation]` is the circuit's own (what it was pruned with); the others are
    only for the sensitivity check."""
    if n_random < 1:
        raise UserError(f"validate: --random must be >= 1 (random circuits to compare), got {n_random}")
    values = ablation_values[ablation]
    with_nodes = lambda k, v=values: CircuitIntervention.keeping(k, v, freeze_norms)
    everything = {n: torch.ones_like(k) for n, k in keep.items()}
    complement = {n: ~k for n, k in keep.items()}
    g = torch.Generator().manual_seed(seed)
    randoms = [_loss_acc(model, tt, with_nodes(random_keep(keep, g))) for _ in range(n_random)]
    return Validation(
        split=split,
        full_model=_loss_acc(model, tt, with_nodes(everything)),
        sufficiency=_loss_acc(model, tt, with_nodes(keep)),
        necessity=_loss_acc(model, tt, with_nodes(complement)),
        random_circuits=RandomCircuits(n_random, sum(r.loss for r in randoms) / n_random,
                                       min(r.loss for r in randoms), sum(r.accuracy for r in randoms) / n_random),
        ablation_sensitivity={kind: _loss_acc(model, tt, with_nodes(keep, v)).loss
                              for kind, v in ablation_values.items()},
        role_drift=role_drift(model, tt, keep, with_nodes(keep)),
    )
