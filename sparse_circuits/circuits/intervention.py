"""The model with a circuit: the one place that turns "keep these nodes" into a forward pass.

A `CircuitIntervention` holds a gate per node (1 keep, 0 ablate; learned masks give gates that
carry gradients), the ablation value of every node, and whether the norms' 1/rms factors are frozen
to the whole model's. Pruning, validation, the report (and later bridges) all run a circuit through
it, so they cannot disagree about what "the circuit" computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..hooks import Hooks
from ..model import GPT
from ..tasks.evaluate import TaskTensors, score_logit_diffs
from ..tasks.evaluate import logit_diffs as model_logit_diffs
from .masks import frozen_norm_hooks, gate_hooks
from .values import NodeValues, values_for


@dataclass
class CircuitIntervention:
    gates: dict[str, torch.Tensor] | None  # per node site, (width,) in [0, 1]; None: the whole model
    ablation_values: NodeValues  # what a removed node takes: constants per site, or resampled values
    freeze_norms: bool = False

    @classmethod
    def keeping(cls, keep: dict[str, torch.Tensor] | None, ablation_values: NodeValues,
                freeze_norms: bool = False) -> "CircuitIntervention":
        """A discrete circuit: boolean keep masks per node site (None: every node kept)."""
        gates = None if keep is None else {name: k.float() for name, k in keep.items()}
        return cls(gates, ablation_values, freeze_norms)

    def hooks(self, model: GPT, idx: torch.Tensor, logits_at: torch.Tensor | None = None) -> Hooks:
        """Hooks for one forward of `model` on `idx` (with the same `logits_at` as that forward):
        frozen norms are recorded from the whole model on exactly these inputs."""
        hooks = gate_hooks(self.gates, values_for(self.ablation_values, model, idx, logits_at)) if self.gates is not None \
            else Hooks()
        if self.freeze_norms:
            hooks = frozen_norm_hooks(model, idx, hooks, logits_at)
        return hooks

    def logit_diffs(self, model: GPT, tt: TaskTensors, rows: torch.Tensor) -> torch.Tensor:
        """Correct-minus-wrong logit of each of the task's rows, through the circuit."""
        hooks = self.hooks(model, *tt.inputs(rows, next(model.parameters()).device))
        return model_logit_diffs(model, tt, rows, hooks)

    @torch.no_grad()
    def task_loss(self, model: GPT, tt: TaskTensors, batch_size: int = 64) -> tuple[float, torch.Tensor]:
        """Task loss (nats, mean over sequences) over every row of `tt`, and the logit differences."""
        d = tt.per_row(lambda rows: self.logit_diffs(model, tt, rows), batch_size)
        return score_logit_diffs(d)[0], d
