"""Pruning and validation of a trained run, as the CLI and notebooks call them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..runs import Run, load_model
from ..config import RunConfig
from ..data import load_tokenizer
from ..errors import UserError
from ..model import GPT
from ..tasks import Split, TaskDataset, all_tasks, get_task
from ..nodes import NodeId
from .circuit import Circuit, SearchRun, TaskSample, check_circuit_model, load_circuit
from .edges import count_edges
from .intervention import CircuitIntervention
from .masks import Ablation
from .means import load_or_compute_means, task_means
from ..tasks.evaluate import TaskTensors, load_or_evaluate_run
from .prune import PruneConfig, PruneResult, prune_search
from .summary import SUMMARY_FILE, PruneAllSummary, TaskOutcome, TaskStatus, bigram_decided
from .validate import Validation, validate

DEFAULT_BUDGET = 1  # pruning runs per task; see docs/circuits.md for how it was chosen
PRUNE_PAIRS = 128
# prune-all attempts a task only if the whole model does it: task loss at most this on the train
# split (chance is ln 2 = 0.693). Pruning can beat the whole model, but not from chance.
MAX_FULL_LOSS = 0.45


class NoCircuit(UserError):
    pass


def ablation_values(model: GPT, run_dir: str | os.PathLike, data_dir: str, task_prompts: list[list[int]],
                    progress: bool = True) -> dict[Ablation, dict[str, torch.Tensor]]:
    pretrain = load_or_compute_means(model, run_dir, data_dir, progress=progress)
    return {
        Ablation.MEAN_PRETRAIN: pretrain,
        Ablation.MEAN_TASK: task_means(model, task_prompts),
        Ablation.ZERO: {name: torch.zeros_like(m) for name, m in pretrain.items()},
    }


@dataclass
class TaskSetup:
    """A run's model and tokenizer with one task's pairs built for it."""
    model: GPT
    run_config: RunConfig
    tokenizer: Tokenizer
    dataset: TaskDataset
    tensors: TaskTensors


def load_task_setup(run_dir: str | os.PathLike, task_name: str, split: Split, n_pairs: int, seed: int) -> TaskSetup:
    model, run_cfg = load_model(run_dir)
    tok = load_tokenizer(Path(run_dir) / "tokenizer.json")
    ds = get_task(task_name).build(tok, split, n_pairs, seed)
    return TaskSetup(model, run_cfg, tok, ds, TaskTensors.of(ds, model, tok))


def check_search_size(budget: int, n_pairs: int) -> None:
    if budget < 1:
        raise UserError(f"prune: --budget is the number of pruning runs per task and must be >= 1, got {budget}")
    if n_pairs < 2:
        raise UserError(f"prune: --pairs must be >= 2 (task pairs to prune and validate on), got {n_pairs}")


def prune_task(run_dir: str | os.PathLike, task_name: str, out_dir: str | os.PathLike | None,
               cfg: PruneConfig = PruneConfig(), budget: int = DEFAULT_BUDGET, n_pairs: int = PRUNE_PAIRS,
               seed: int = 0, progress: bool = True) -> tuple[Circuit, list[PruneResult]]:
    """Prune on the task's train split with `budget` runs of the search; write the best circuit."""
    check_search_size(budget, n_pairs)
    s = load_task_setup(run_dir, task_name, Split.TRAIN, n_pairs, seed)
    model = s.model
    values = ablation_values(model, run_dir, s.run_config.data_dir, s.dataset.prompt_tokens, progress)
    best, runs = prune_search(model, s.tensors, values[cfg.ablation], cfg, budget, seed, progress)
    if not best.found:
        raise NoCircuit(f"task {task_name!r}: no circuit of {run_dir} reaches task loss {cfg.target_loss} "
                        f"(the whole model with pruning's ablations: {best.loss_curve[-1][1]:.3f}); "
                        "the model cannot do this task at that target")
    edges = count_edges(model, best.keep)
    circuit = Circuit(
        task=task_name, model_dir=str(run_dir), model_sha256=Run(run_dir).weights_sha256(),
        config=best.config, loss=best.loss, loss_calibrated=best.loss_calibrated, calibration=best.calibration,
        nodes=sorted(NodeId.at(n, i) for n, k in best.keep.items() for i in k.nonzero().squeeze(1).tolist()),
        edges=edges.weights, residual_links=edges.residual, qk_pairs=edges.qk_pairs,
        tau=best.tau, means=values[cfg.ablation], sample=TaskSample(Split.TRAIN, n_pairs, seed),
        search=[SearchRun(r.num_nodes if r.found else None, r.loss if r.found else None, r.config.k_coef,
                          r.config.lr, r.seconds) for r in runs],
        loss_curve=best.loss_curve, seconds=sum(r.seconds for r in runs),
    )
    if out_dir is not None:
        circuit.save(out_dir)
    return circuit, runs


def validate_circuit(circuit_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None,
                     n_pairs: int = PRUNE_PAIRS, n_random: int = 10, progress: bool = True) -> Validation:
    """Faithfulness numbers of a circuit on its task's held-out test split; written to validation.json.

    The circuit is ablated with the values it was pruned with (stored in the circuit); the other
    ablations are recomputed for the sensitivity check."""
    circuit = load_circuit(circuit_dir)
    model_dir = model_dir or circuit.model_dir
    check_circuit_model(circuit, circuit_dir, model_dir)
    seed = circuit.sample.seed
    s = load_task_setup(model_dir, circuit.task, Split.TEST, n_pairs, seed)
    train_ds = get_task(circuit.task).build(s.tokenizer, Split.TRAIN, circuit.sample.pairs, seed)
    values = ablation_values(s.model, model_dir, s.run_config.data_dir, train_ds.prompt_tokens, progress)
    values[circuit.ablation] = circuit.means
    keep = circuit.keep_masks({n: site.width for n, site in s.model.node_sites().items()})
    result = validate(s.model, s.tensors, keep, values, circuit.ablation, circuit.config.freeze_norms,
                      n_random=n_random)
    result.save(circuit_dir)
    return result


def full_model_loss(run_dir: str | os.PathLike, task_name: str, n_pairs: int = PRUNE_PAIRS) -> float:
    s = load_task_setup(run_dir, task_name, Split.TRAIN, n_pairs, 0)
    return CircuitIntervention.keeping(None, {}).task_loss(s.model, s.tensors)[0]


def prune_all(run_dir: str | os.PathLike, out_root: str | os.PathLike, cfg: PruneConfig = PruneConfig(),
              budget: int = DEFAULT_BUDGET, n_pairs: int = PRUNE_PAIRS, include_controls: bool = True,
              max_full_loss: float = MAX_FULL_LOSS, progress: bool = True, log=print,
              reuse: bool = False, only: list[str] | None = None,
              min_accuracy: float | None = None) -> PruneAllSummary:
    """Prune every task the model does (and the controls); the rest are reported, not fatal.

    A task is attempted when the whole model's task loss on the pruning pairs is at most
    `max_full_loss` and, with `min_accuracy`, its test accuracy is at least that (0.9: only the
    tasks the model has learned). Controls are always attempted. The summary is rewritten after
    every task. With `reuse`, tasks that an earlier call finished with the same weights and settings
    are taken from its summary instead of pruned again. `only` limits the tasks to those named."""
    check_search_size(budget, n_pairs)
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise UserError(f"prune-all: --min-accuracy must be in [0, 1] (a test accuracy), got {min_accuracy}")
    out_root = Path(out_root)
    summary = PruneAllSummary(model=str(run_dir), weights_sha256=Run(run_dir).weights_sha256(),
                              config=cfg, budget=budget, pairs=n_pairs, max_full_loss=max_full_loss, tasks={},
                              min_accuracy=min_accuracy)
    earlier = _earlier_outcomes(out_root, summary) if reuse else {}
    scores = load_or_evaluate_run(run_dir, progress=progress).by_task()
    for task in all_tasks(include_controls):
        if only is not None and task.name not in only:
            continue
        if task.name in earlier:
            outcome = earlier[task.name]
            log(f"{task.name}: reused")
        elif scores[task.name].error is not None:
            outcome = TaskOutcome(TaskStatus.NOT_EXPRESSIBLE, task.control, None, error=scores[task.name].error)
            log(f"{task.name}: not expressible with this tokenizer")
        elif min_accuracy is not None and not task.control and scores[task.name].accuracy < min_accuracy:
            accuracy = scores[task.name].accuracy
            outcome = TaskOutcome(TaskStatus.NOT_LEARNED, False, None,
                                  error=f"test accuracy {accuracy:.3f} < {min_accuracy}: not learned, not attempted")
            log(f"{task.name}: skipped, test accuracy {accuracy:.3f}")
        else:
            outcome = _prune_and_validate(run_dir, out_root, task, cfg, budget, n_pairs, max_full_loss, progress, log)
        score = scores[task.name]
        outcome.test_accuracy, outcome.bigram_accuracy = score.accuracy, score.bigram_accuracy
        outcome.bigram_decided = bigram_decided(score.bigram_accuracy)
        summary.tasks[task.name] = outcome
        summary.save(out_root)
    return summary


def _prune_and_validate(run_dir, out_root: Path, task, cfg: PruneConfig, budget: int, n_pairs: int,
                        max_full_loss: float, progress: bool, log) -> TaskOutcome:
    full = full_model_loss(run_dir, task.name, n_pairs)
    if full > max_full_loss and not task.control:
        log(f"{task.name}: skipped, whole-model loss {full:.3f}")
        return TaskOutcome(TaskStatus.NOT_ATTEMPTED, False, full,
                           error=f"the whole model's task loss {full:.3f} > {max_full_loss}: not attempted")
    try:
        circuit, _ = prune_task(run_dir, task.name, out_root / task.name, cfg, budget, n_pairs, progress=progress)
        validation = validate_circuit(out_root / task.name, run_dir, n_pairs, progress=progress)
    except NoCircuit as e:
        log(f"{task.name}: no circuit at the target")
        return TaskOutcome(TaskStatus.NO_CIRCUIT, task.control, full, error=str(e))
    log(f"{task.name}: {circuit.num_nodes} nodes, {circuit.num_edges} edges")
    return TaskOutcome(TaskStatus.CIRCUIT, task.control, full, num_nodes=circuit.num_nodes,
                       num_edges=circuit.num_edges, loss=circuit.loss, loss_calibrated=circuit.loss_calibrated,
                       test_loss=validation.sufficiency.loss, necessity_loss=validation.necessity.loss,
                       random_loss=validation.random_circuits.mean_loss, role_drift_mean=validation.role_drift.mean,
                       seconds=circuit.seconds)


def _earlier_outcomes(out_root: Path, summary: PruneAllSummary) -> dict[str, TaskOutcome]:
    """Outcomes of an earlier summary with the same weights and settings whose files are all still there."""
    if not (out_root / SUMMARY_FILE).is_file():
        return {}
    try:
        earlier = PruneAllSummary.load(out_root)
    except UserError:
        return {}  # damaged: prune everything again
    if earlier.settings() != summary.settings():
        return {}
    return {name: r for name, r in earlier.tasks.items()
            if not r.has_circuit or all((out_root / name / f).is_file() for f in CIRCUIT_FILES)}


CIRCUIT_FILES = ("circuit.json", "circuit.safetensors", "validation.json")
