"""Ablation kinds: what a node outside the circuit is set to. A registry: each kind computes its
own values (one (width,) tensor per node site, or `ResampledValues`) from what `AblationInputs`
offers, so adding a kind is one decorated function here; `prune --ablation`, `validate`'s
sensitivity check and the CLI's choices all read `ABLATIONS`.

`optimal` is the one kind whose values depend on the circuit: its registered values are where the
fit starts (the pretraining means); pruning fits them jointly with the masks, and `validate` fits
them to a circuit pruned under another kind (`prune.fit_constants`, on the task's train split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..data import DataSplit, TokenData
from ..model import GPT
from ..runs import Run
from .masks import Ablation
from .means import load_or_compute_means, task_means
from .values import NodeValues, ResampledValues

# [ours] Resampling draws each example's other context from this many pretraining windows (train
# split, fixed seed): enough that two examples rarely share one, few enough to store in a circuit.
RESAMPLE_POOL = 256
RESAMPLE_SEED = 0


@dataclass
class AblationInputs:
    """What an ablation kind may compute its values from: the run's model, the run (for cached
    pretraining means), its data, and the prompts of the task's pruning split."""
    model: GPT
    run: Run
    data_dir: str
    task_prompts: list[list[int]]
    progress: bool = True


@dataclass(frozen=True)
class AblationKind:
    kind: Ablation
    description: str
    values: Callable[[AblationInputs], NodeValues]


ABLATIONS: dict[Ablation, AblationKind] = {}


def ablation_kind(kind: Ablation, description: str):
    """Register the function that computes `kind`'s values."""
    def register(fn: Callable[[AblationInputs], NodeValues]):
        if kind in ABLATIONS:
            raise ValueError(f"ablation kind {kind.value!r} is registered twice")
        ABLATIONS[kind] = AblationKind(kind, description, fn)
        return fn
    return register


@ablation_kind(Ablation.MEAN_PRETRAIN, "the node's mean over pretraining tokens (the paper's; default)")
def _mean_pretrain(inputs: AblationInputs) -> dict[str, torch.Tensor]:
    return load_or_compute_means(inputs.model, inputs.run.dir, inputs.data_dir, progress=inputs.progress)


@ablation_kind(Ablation.MEAN_TASK, "the node's mean over the task's prompts (pruning split)")
def _mean_task(inputs: AblationInputs) -> dict[str, torch.Tensor]:
    return task_means(inputs.model, inputs.task_prompts)


@ablation_kind(Ablation.ZERO, "zero")
def _zero(inputs: AblationInputs) -> dict[str, torch.Tensor]:
    return {name: torch.zeros(site.width) for name, site in inputs.model.node_sites().items()}


@ablation_kind(Ablation.RESAMPLE, "the node's value on another pretraining context, drawn per example (resampling)")
def _resample(inputs: AblationInputs) -> ResampledValues:
    pool, _ = TokenData(inputs.data_dir).batch(DataSplit.TRAIN, RESAMPLE_POOL, inputs.model.cfg.context,
                                               RESAMPLE_SEED, 0)
    return ResampledValues(pool, RESAMPLE_SEED)


@ablation_kind(Ablation.OPTIMAL, "a constant per node fitted to the task on the train split (optimal ablation)")
def _optimal(inputs: AblationInputs) -> dict[str, torch.Tensor]:
    return _mean_pretrain(inputs)  # where the fit starts


def ablation_values(inputs: AblationInputs, kinds: list[Ablation] | None = None
                    ) -> dict[Ablation, NodeValues]:
    """The values of each of `kinds` (default: every registered kind), in registry order."""
    return {kind: spec.values(inputs) for kind, spec in ABLATIONS.items() if kinds is None or kind in kinds}


def ablation_choices() -> list[str]:
    return [kind.value for kind in ABLATIONS]
