"""Pruning and validation of a trained run, as the CLI and notebooks call them."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from ..config import RunConfig
from ..errors import UserError
from ..fileio import write_json
from ..model import GPT
from ..nodes import NodeId
from ..runs import Run
from ..tasks import Split, TaskDataset, all_tasks, get_task
from ..tasks.core import FILE_TASKS
from ..tasks.evaluate import TaskTensors, load_or_evaluate_run
from .ablations import AblationInputs, ablation_values
from .circuit import Circuit, SearchRun, TaskSample, check_circuit_model, load_circuit
from .edges import count_edges
from .intervention import CircuitIntervention
from .masks import Ablation, keep_masks
from .prune import PruneConfig, PruneResult, fit_constants, prune_search
from .summary import SUMMARY_FILE, PruneAllSummary, TaskOutcome, TaskStatus, bigram_decided
from .export import ExportFormat, graph_json, mib_json
from .validate import Validation, faithfulness_curve, validate

DEFAULT_BUDGET = 1  # pruning runs per task; see docs/circuits.md for how it was chosen
PRUNE_PAIRS = 128
# prune-all attempts a task only if the whole model does it: task loss at most this on the train
# split (chance is ln 2 = 0.693). Pruning can beat the whole model, but not from chance.
MAX_FULL_LOSS = 0.45


class NoCircuit(UserError):
    pass


@dataclass
class LoadedRun:
    """A run loaded once for pruning and validation: its model, config, tokenizer and weights hash.
    `prune_all`, the demo, the sweep and the circuit history pass it between tasks and stages."""
    run: Run
    model: GPT
    config: RunConfig
    tokenizer: Tokenizer
    weights_sha256: str

    @classmethod
    def load(cls, run_dir: str | os.PathLike | Run) -> LoadedRun:
        run = Run(run_dir)
        model, cfg = run.load_model()
        return cls(run, model, cfg, run.tokenizer(), run.weights_sha256())

    def task(self, task_name: str, split: Split, n_pairs: int, seed: int) -> tuple[TaskDataset, TaskTensors]:
        ds = get_task(task_name).build(self.tokenizer, split, n_pairs, seed)
        return ds, TaskTensors.of(ds, self.model, self.tokenizer)

    def ablation_inputs(self, task_prompts: list[list[int]], progress: bool = True) -> AblationInputs:
        return AblationInputs(self.model, self.run, self.config.data_dir, task_prompts, progress)


def _loaded(run: str | os.PathLike | Run | LoadedRun) -> LoadedRun:
    return run if isinstance(run, LoadedRun) else LoadedRun.load(run)


def check_search_size(budget: int, n_pairs: int) -> None:
    if budget < 1:
        raise UserError(f"prune: --budget is the number of pruning runs per task and must be >= 1, got {budget}")
    if n_pairs < 2:
        raise UserError(f"prune: --pairs must be >= 2 (task pairs to prune and validate on), got {n_pairs}")


def prune_task(run: str | os.PathLike | LoadedRun, task_name: str, out_dir: str | os.PathLike | None,
               cfg: PruneConfig = PruneConfig(), budget: int = DEFAULT_BUDGET, n_pairs: int = PRUNE_PAIRS,
               seed: int = 0, progress: bool = True, forbidden: list[NodeId] = ()) -> tuple[Circuit, list[PruneResult]]:
    """Prune on the task's train split with `budget` runs of the search; write the best circuit
    to `out_dir` (None: keep it in memory only). `forbidden` nodes are never kept (backups.py)."""
    check_search_size(budget, n_pairs)
    loaded = _loaded(run)
    model = loaded.model
    ds, tensors = loaded.task(task_name, Split.TRAIN, n_pairs, seed)
    values = ablation_values(loaded.ablation_inputs(ds.prompt_tokens, progress), [cfg.ablation])[cfg.ablation]
    best, runs = prune_search(model, tensors, values, cfg, budget, seed, progress, forbidden)
    if not best.found:
        raise NoCircuit(f"task {task_name!r}: no circuit of {loaded.run} reaches task loss {cfg.target_loss} "
                        f"(the whole model with pruning's ablations: {best.loss_curve[-1][1]:.3f}); "
                        "the model cannot do this task at that target")
    edges = count_edges(model, best.keep)
    circuit = Circuit(
        task=task_name, model_dir=str(loaded.run), model_sha256=loaded.weights_sha256,
        config=best.config, loss=best.loss, loss_calibrated=best.loss_calibrated, calibration=best.calibration,
        nodes=sorted(NodeId.at(n, i) for n, k in best.keep.items() for i in k.nonzero().squeeze(1).tolist()),
        edges=edges.weights, residual_links=edges.residual, qk_pairs=edges.qk_pairs,
        tau=best.tau, means=best.ablation_values, sample=TaskSample(Split.TRAIN, n_pairs, seed),
        search=[SearchRun(r.num_nodes if r.found else None, r.loss if r.found else None, r.config.k_coef,
                          r.config.lr, r.seconds) for r in runs],
        loss_curve=best.loss_curve, seconds=sum(r.seconds for r in runs),
    )
    if out_dir is not None:
        circuit.save(out_dir)
    return circuit, runs


def validate_loaded(loaded: LoadedRun, circuit: Circuit, n_pairs: int = PRUNE_PAIRS, n_random: int = 10,
                    progress: bool = True) -> Validation:
    """Faithfulness numbers of a circuit of `loaded`'s model on its task's held-out test split.

    The circuit is ablated with the values it was pruned with (stored in the circuit); the other
    ablation kinds are computed for the sensitivity check."""
    if circuit.model_sha256 != loaded.weights_sha256:
        raise UserError(f"the circuit of {circuit.task!r} was pruned from another model ({circuit.model_dir}), "
                        f"not {loaded.run}; prune this model or pass the circuit's own model")
    seed = circuit.sample.seed
    _, tensors = loaded.task(circuit.task, Split.TEST, n_pairs, seed)
    train_ds = get_task(circuit.task).build(loaded.tokenizer, Split.TRAIN, circuit.sample.pairs, seed)
    values = ablation_values(loaded.ablation_inputs(train_ds.prompt_tokens, progress))
    values[circuit.ablation] = circuit.means
    keep = keep_masks(circuit.nodes, {n: site.width for n, site in loaded.model.node_sites().items()})
    if circuit.ablation != Ablation.OPTIMAL:  # optimal constants belong to a circuit: fit them to this one
        _, train_tensors = loaded.task(circuit.task, Split.TRAIN, circuit.sample.pairs, seed)
        values[Ablation.OPTIMAL] = fit_constants(loaded.model, train_tensors, keep, values[Ablation.OPTIMAL],
                                                 circuit.config.freeze_norms, seed=seed)
    result = validate(loaded.model, tensors, keep, values, circuit.ablation, circuit.config.freeze_norms,
                      n_random=n_random, target_loss=circuit.target_loss)
    result.faithfulness = faithfulness_curve(circuit, loaded.model, tensors)
    return result


def export_circuit(circuit_dir: str | os.PathLike, fmt: ExportFormat, out: str | os.PathLike,
                   model_dir: str | os.PathLike | None = None, n_pairs: int = PRUNE_PAIRS) -> dict:
    """The circuit in `fmt` (circuits/export.py), with its faithfulness curve on the test split, to `out`."""
    circuit = load_circuit(circuit_dir)
    model_dir = model_dir or circuit.model_dir
    check_circuit_model(circuit, circuit_dir, model_dir)
    loaded = LoadedRun.load(model_dir)
    ds, tensors = loaded.task(circuit.task, Split.TEST, n_pairs, circuit.sample.seed)
    if fmt == ExportFormat.GRAPH:
        data = graph_json(circuit, loaded.model, loaded.tokenizer, ds.prompt_tokens[0], Path(model_dir).name)
    else:
        data = mib_json(circuit, loaded.model)
    data["faithfulness"] = faithfulness_curve(circuit, loaded.model, tensors).as_dict()
    write_json(out, data)
    return data


def validate_circuit(circuit_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None,
                     n_pairs: int = PRUNE_PAIRS, n_random: int = 10, progress: bool = True) -> Validation:
    """`validate_loaded` on a circuit directory (and its model, or `model_dir`); written to validation.json."""
    circuit = load_circuit(circuit_dir)
    model_dir = model_dir or circuit.model_dir
    check_circuit_model(circuit, circuit_dir, model_dir)
    result = validate_loaded(LoadedRun.load(model_dir), circuit, n_pairs, n_random, progress)
    result.save(circuit_dir)
    return result


def full_model_loss(run: str | os.PathLike | LoadedRun, task_name: str, n_pairs: int = PRUNE_PAIRS) -> float:
    loaded = _loaded(run)
    _, tensors = loaded.task(task_name, Split.TRAIN, n_pairs, 0)
    return CircuitIntervention.keeping(None, {}).task_loss(loaded.model, tensors)[0]


def prune_all(run_dir: str | os.PathLike | LoadedRun, out_root: str | os.PathLike, cfg: PruneConfig = PruneConfig(),
              budget: int = DEFAULT_BUDGET, n_pairs: int = PRUNE_PAIRS, include_controls: bool = True,
              max_full_loss: float = MAX_FULL_LOSS, progress: bool = True, log=print,
              reuse: bool = False, only: list[str] | None = None,
              min_accuracy: float | None = None, jobs: int = 1) -> PruneAllSummary:
    """Prune every task the model does (and the controls); the rest are reported, not fatal.

    A task is attempted when the whole model's task loss on the pruning pairs is at most
    `max_full_loss` and, with `min_accuracy`, its test accuracy is at least that (0.9: only the
    tasks the model has learned). Controls are always attempted. The summary is rewritten after
    every task. With `reuse`, tasks that an earlier call finished with the same weights and settings
    are taken from its summary instead of pruned again. `only` limits the tasks to those named.
    With `jobs` > 1 (a CPU with cores to spare) that many tasks are pruned at once, one process and
    one thread each (`_prune_side_by_side`)."""
    check_search_size(budget, n_pairs)
    if jobs < 1:
        raise UserError(f"prune-all: --jobs is the number of tasks pruned at once and must be >= 1, got {jobs}")
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise UserError(f"prune-all: --min-accuracy must be in [0, 1] (a test accuracy), got {min_accuracy}")
    out_root = Path(out_root)
    loaded = _loaded(run_dir)
    summary = PruneAllSummary(model=str(loaded.run), weights_sha256=loaded.weights_sha256,
                              config=cfg, budget=budget, pairs=n_pairs, max_full_loss=max_full_loss, tasks={},
                              min_accuracy=min_accuracy)
    earlier = _earlier_outcomes(out_root, summary) if reuse else {}
    scores = load_or_evaluate_run(loaded.run.dir, progress=progress).by_task()
    side_by_side_tasks = []
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
        elif (full := full_model_loss(loaded, task.name, n_pairs)) > max_full_loss and not task.control:
            log(f"{task.name}: skipped, whole-model loss {full:.3f}")
            outcome = TaskOutcome(TaskStatus.NOT_ATTEMPTED, False, full,
                                  error=f"the whole model's task loss {full:.3f} > {max_full_loss}: not attempted")
        elif jobs > 1:
            side_by_side_tasks.append(task)
            continue
        else:
            outcome = _prune_and_validate(loaded, out_root, task, cfg, budget, n_pairs, full, progress, log)
        _record(summary, task.name, outcome, scores[task.name], out_root)
    if side_by_side_tasks:
        parts = out_root / PARTS_DIR
        outcomes = _prune_side_by_side(loaded, parts, side_by_side_tasks, summary, include_controls, jobs, log)
        for task, outcome in zip(side_by_side_tasks, outcomes):
            if (parts / task.name / task.name).is_dir():  # the circuit's files, into the summary's directory
                shutil.rmtree(out_root / task.name, ignore_errors=True)
                (parts / task.name / task.name).rename(out_root / task.name)
            _record(summary, task.name, outcome, scores[task.name], out_root)
        summary.tasks = {t.name: summary.tasks[t.name] for t in all_tasks(include_controls) if t.name in summary.tasks}
        summary.save(out_root)
        shutil.rmtree(parts, ignore_errors=True)
    return summary


def _record(summary: PruneAllSummary, name: str, outcome: TaskOutcome, score, out_root: Path) -> None:
    """Add a task's outcome, with its accuracies, to the summary and rewrite it (a killed run resumes there)."""
    outcome.from_file = name in FILE_TASKS
    outcome.test_accuracy, outcome.bigram_accuracy = score.accuracy, score.bigram_accuracy
    outcome.bigram_decided = bigram_decided(score.bigram_accuracy)
    summary.tasks[name] = outcome
    summary.save(out_root)


# [ours] Where side-by-side tasks are pruned: each its own prune-all of one task (its own summary, so a
# killed run resumes task by task), moved into the summary's directory when all have finished.
PARTS_DIR = ".side-by-side"


def _prune_side_by_side(loaded: LoadedRun, parts: Path, tasks: list, summary: PruneAllSummary,
                        include_controls: bool, jobs: int, log) -> list[TaskOutcome]:
    """Prune `tasks`, `jobs` at a time, one process and one thread each (parallel.py: on a CPU, two
    single-thread jobs do more work than one two-thread job); returns their outcomes in order."""
    from ..parallel import Job, log_for, side_by_side

    workers = min(jobs, len(tasks))
    log(f"pruning {len(tasks)} tasks, {workers} at a time, one thread each")
    files = [str(t.path) for t in FILE_TASKS.values()]  # a spawned process registers them again
    args = dict(run_dir=str(loaded.run.dir), cfg=summary.config, budget=summary.budget, n_pairs=summary.pairs,
                include_controls=include_controls, max_full_loss=summary.max_full_loss, progress=False, reuse=True)
    done = side_by_side([Job(task.name, _prune_one_task, args | {"task_files": files, "name": task.name,
                                                                 "out_root": str(parts / task.name),
                                                                 "log": log_for(task.name)})
                         for task in tasks], workers)
    return [part.tasks[task.name] for task, part in zip(tasks, done)]


def _prune_one_task(task_files: list[str], name: str, **prune_all_args) -> PruneAllSummary:
    """One side-by-side job (module level: it crosses a process boundary)."""
    from ..tasks.from_file import use_task_files

    use_task_files(task_files)
    return prune_all(only=[name], **prune_all_args)


def _prune_and_validate(loaded: LoadedRun, out_root: Path, task, cfg: PruneConfig, budget: int, n_pairs: int,
                        full: float, progress: bool, log) -> TaskOutcome:
    try:
        circuit, _ = prune_task(loaded, task.name, out_root / task.name, cfg, budget, n_pairs, progress=progress)
        validation = validate_loaded(loaded, circuit, n_pairs, progress=progress)
        validation.save(out_root / task.name)
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
