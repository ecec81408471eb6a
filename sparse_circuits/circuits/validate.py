"""Faithfulness checks of a circuit (SPEC section 7), all in numbers.

- sufficiency: task loss on held-out pairs with everything outside the circuit ablated;
- necessity: task loss of the full model with only the circuit's nodes ablated;
- random circuits: the same number of nodes per site, chosen at random;
- ablation sensitivity: the circuit's loss under zero, pretraining-mean and task-mean ablation;
- role drift: per kept node, the correlation of its activations in the pruned and in the full
  model over every token of the task prompts;
- the complement restored: random subsets of the nodes outside the circuit (a fraction of them)
  take their own values (the whole model's activations on the same input) instead of the
  ablation's, and an adversary picks the subset of a given
  size that hurts most (greedy over the nodes ranked by the gradient of the loss with respect to
  their gates). A circuit that keeps the task only with the rest exactly ablated is flagged
  `fragile`;
- the faithfulness curve: nodes added in the order pruning ranked them (tau, highest first), the
  circuit's edges and task loss at each size up to the circuit itself; normalised faithfulness
  f = (L(empty) - L(k)) / (L(empty) - L(model)), and MIB's two areas over the edge fraction:
  CPR = area under f (higher: more faithful), CMD = area under |1 - f| (lower: closer to the model).
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
from ..tasks.evaluate import TaskTensors, score_logit_diffs, task_loss
from .circuit import VALIDATION_FILE, Circuit
from .intervention import CircuitIntervention
from .edges import count_edges
from .masks import Ablation, keep_masks
from .values import NodeValues, RestoredValues, values_for



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


# [ours] The complement check: fractions of the complement restored at random (half of validate's random
# circuits, 5 by default, per fraction), and
# "keeps the task" = the worst loss stays at or below this multiple of the circuit's target loss.
RESTORED_FRACTIONS = (0.1, 0.5)
KEEPS_TASK_FACTOR = 2.0
ADVERSARY_EVALUATIONS = 32  # forwards the greedy adversary may spend


@dataclass
class Restoration:
    fraction: float  # of the nodes outside the circuit, restored to the full model's values
    n: int
    mean_loss: float
    worst_loss: float


@dataclass
class ComplementCheck:
    random: list[Restoration]
    adversary_size: int  # nodes the adversary restores (default: the circuit's size)
    adversary_loss: float
    threshold: float  # the circuit keeps the task while the loss is at or below this
    fragile: bool  # some restoration (random or adversarial) took the loss above the threshold

    @property
    def worst_loss(self) -> float:
        return max([r.worst_loss for r in self.random] + [self.adversary_loss])


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
    complement: ComplementCheck | None = None  # None: validated before the check existed
    faithfulness: FaithfulnessCurve | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["split"] = self.split.value
        d["ablation_sensitivity"] = {k.value: v for k, v in self.ablation_sensitivity.items()}
        if self.complement is not None:
            d["complement"]["worst_loss"] = self.complement.worst_loss  # derived: for readers of the file
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
                       role_drift=RoleDrift(**d["role_drift"]), notes=list(d.get("notes", [])),
                       complement=_complement(d.get("complement")),
                       faithfulness=FaithfulnessCurve(**d["faithfulness"]) if d.get("faithfulness") else None)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: damaged validation file ({type(e).__name__}: {e}); "
                            "run `sparse-circuits validate` again") from None


@dataclass
class FaithfulnessCurve:
    points: list[list[float]]  # [nodes, edges, task loss, faithfulness f]
    model_loss: float
    empty_loss: float
    cpr: float  # area under f over the edge fraction (higher: more faithful)
    cmd: float  # area under |1 - f| (lower: closer to the model)

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def faithfulness_curve(circuit: Circuit, model: GPT, tt: TaskTensors, steps: int = 8) -> FaithfulnessCurve:
    """Nodes added by pruning's ranking (tau, highest first; the circuit's own nodes are exactly
    the kept ones) at `steps` sizes up to the circuit, on `tt`."""
    widths = {n: s.width for n, s in model.node_sites().items()}
    ranked = sorted(circuit.nodes, key=lambda n: -float(circuit.tau[n.site][n.index]) if n.site in circuit.tau else 0.0)
    loss_of = lambda nodes: CircuitIntervention.keeping(keep_masks(nodes, widths) if nodes is not None else None,
                                                        circuit.means, circuit.config.freeze_norms).task_loss(model, tt)[0]
    model_loss, empty_loss = loss_of(None), loss_of([])
    span = empty_loss - model_loss
    sizes = sorted({round(i * len(ranked) / steps) for i in range(steps + 1)})
    points = []
    for k in sizes:
        nodes = ranked[:k]
        edges = count_edges(model, keep_masks(nodes, widths)).num_edges
        loss = loss_of(nodes)
        points.append([k, edges, loss, (empty_loss - loss) / span if span else float("nan")])
    total = max(1, points[-1][1])
    cpr = cmd = 0.0
    for (_, e0, _, f0), (_, e1, _, f1) in zip(points, points[1:]):
        dx = (e1 - e0) / total
        cpr += dx * (f0 + f1) / 2
        cmd += dx * (abs(1 - f0) + abs(1 - f1)) / 2
    return FaithfulnessCurve(points, model_loss, empty_loss, cpr, cmd)


def _complement(d: dict | None) -> ComplementCheck | None:
    if d is None:
        return None
    return ComplementCheck([Restoration(**r) for r in d["random"]], d["adversary_size"], d["adversary_loss"],
                           d["threshold"], d["fragile"])


def _loss_acc(model: GPT, tt: TaskTensors, circuit: CircuitIntervention) -> LossAcc:
    _, diffs = circuit.task_loss(model, tt)
    loss, acc, _ = score_logit_diffs(diffs)
    return LossAcc(loss, acc)


def complement_check(model: GPT, tt: TaskTensors, keep: dict[str, torch.Tensor], values: NodeValues,
                     target_loss: float, freeze_norms: bool = False, n_random: int = 10,
                     adversary_size: int | None = None, seed: int = 0) -> ComplementCheck:
    """Restore parts of the complement to the whole model's own activations (on the same input):
    random subsets, and the worst subset a cheap greedy adversary finds (candidates ranked by the
    gradient of the loss with respect to each node's restoration, each kept only if it raises the
    loss)."""
    none = {n: torch.zeros_like(k) for n, k in keep.items()}
    loss_of = lambda restore: CircuitIntervention.keeping(keep, RestoredValues(values, restore),
                                                         freeze_norms).task_loss(model, tt)[0]
    outside = [(name, i) for name, k in keep.items() for i in (~k).nonzero().squeeze(1).tolist()]
    g = torch.Generator().manual_seed(seed)
    randoms = []
    for fraction in RESTORED_FRACTIONS:
        losses = []
        for _ in range(max(1, n_random // 2)):
            restore = {n: r.clone() for n, r in none.items()}
            for j in torch.randperm(len(outside), generator=g)[: round(fraction * len(outside))].tolist():
                restore[outside[j][0]][outside[j][1]] = True
            losses.append(loss_of(restore))
        randoms.append(Restoration(fraction, len(losses), sum(losses) / len(losses), max(losses)))
    size = adversary_size if adversary_size is not None else max(1, int(sum(int(k.sum()) for k in keep.values())))
    # d loss / d r at r = 0, where a removed node takes base + r * (its own activation - base)
    rows = torch.arange(tt.n)
    idx, last = tt.inputs(rows, next(model.parameters()).device)
    with torch.no_grad():
        base = values_for(values, model, idx, last)
        _, clean = model.run_with_cache(idx)
    r = {n: torch.zeros(k.shape, requires_grad=True) for n, k in keep.items()}
    with torch.enable_grad():
        mixed = {n: base[n] + r[n] * (clean[n] - base[n]) for n in keep}
        diffs = CircuitIntervention.keeping(keep, mixed, freeze_norms).logit_diffs(model, tt, rows)
        grads = dict(zip(r, torch.autograd.grad(task_loss(diffs, torch.zeros_like(diffs)), list(r.values()))))
    ranked = sorted(outside, key=lambda ni: -float(grads[ni[0]][ni[1]]))
    chosen = {n: t.clone() for n, t in none.items()}
    current, picked = loss_of(chosen), 0
    for name, i in ranked[:ADVERSARY_EVALUATIONS]:
        if picked == size:
            break
        chosen[name][i] = True
        trial = loss_of(chosen)
        if trial > current:
            current, picked = trial, picked + 1
        else:
            chosen[name][i] = False
    threshold = KEEPS_TASK_FACTOR * target_loss
    check = ComplementCheck(randoms, size, current, threshold, False)
    check.fragile = check.worst_loss > threshold
    return check


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
             freeze_norms: bool = False, n_random: int = 10, seed: int = 0, split: Split = Split.TEST,
             target_loss: float | None = None) -> Validation:
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
        complement=None if target_loss is None else complement_check(
            model, tt, keep, values, target_loss, freeze_norms, n_random, seed=seed),
    )
