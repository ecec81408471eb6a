"""Pruning and validation of a trained run, as the CLI and notebooks call them."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..checkpoint import load_model
from ..data import load_tokenizer
from ..errors import UserError
from ..fileio import read_json, sha256_file, write_json
from ..model import GPT
from ..tasks import Split, all_tasks, get_task
from .circuit import Circuit, check_circuit_model, load_circuit
from .edges import count_edges
from .masks import Ablation
from .means import load_or_compute_means, task_means
from ..tasks.evaluate import TaskTensors, load_or_evaluate_run
from .prune import PruneConfig, PruneResult, prune_search
from .validate import Validation, validate

DEFAULT_BUDGET = 1  # pruning runs per task; see docs/circuits.md for how it was chosen
PRUNE_PAIRS = 128
# prune-all attempts a task only if the whole model does it: task loss at most this on the train
# split (chance is ln 2 = 0.693). Pruning can beat the whole model, but not from chance.
MAX_FULL_LOSS = 0.45
# A task whose test split the corpus bigram table alone gets this right (prediction from the last
# token only) is decided by the model's bigram table, not by a circuit: it is marked and kept out
# of the geometric mean (issue 10; else_elif is the example, docs/results.md).
BIGRAM_DECIDED = 0.8


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


def _setup(run_dir: str | os.PathLike, task_name: str, split: str, n_pairs: int, seed: int):
    model, run_cfg = load_model(run_dir)
    tok = load_tokenizer(Path(run_dir) / "tokenizer.json")
    ds = get_task(task_name).build(tok, split, n_pairs, seed)
    return model, run_cfg, tok, ds, TaskTensors.of(ds, model, tok)


def prune_task(run_dir: str | os.PathLike, task_name: str, out_dir: str | os.PathLike | None,
               cfg: PruneConfig = PruneConfig(), budget: int = DEFAULT_BUDGET, n_pairs: int = PRUNE_PAIRS,
               seed: int = 0, progress: bool = True) -> tuple[Circuit, list[PruneResult]]:
    """Prune on the task's train split with `budget` runs of the search; write the best circuit."""
    model, run_cfg, tok, ds, tt = _setup(run_dir, task_name, Split.TRAIN, n_pairs, seed)
    values = ablation_values(model, run_dir, run_cfg.data_dir, ds.prompt_tokens, progress)
    best, runs = prune_search(model, tt, values[cfg.ablation], cfg, budget, seed, progress)
    if not best.found:
        raise NoCircuit(f"task {task_name!r}: no circuit of {run_dir} reaches task loss {cfg.target_loss} "
                        f"(the whole model with pruning's ablations: {best.loss_curve[-1][1]:.3f}); "
                        "the model cannot do this task at that target")
    edges = count_edges(model, best.keep)
    circuit = Circuit(
        task=task_name, model_dir=str(run_dir), model_sha256=sha256_file(Path(run_dir) / "model.safetensors"),
        ablation=cfg.ablation.value, target_loss=cfg.target_loss, loss=best.loss,
        loss_calibrated=best.loss_calibrated,
        calibration={"scale": best.calibration.scale, "shift": best.calibration.shift},
        nodes={n: k.nonzero().squeeze(1).tolist() for n, k in best.keep.items() if k.any()},
        edges=[(e.src, e.dst, e.weight) for e in edges.weights],
        residual_links=[(e.src, e.dst) for e in edges.residual], qk_pairs=edges.qk_pairs,
        hyperparameters=best.config.as_dict(), tau=best.tau, means=values[cfg.ablation],
        data={"split": Split.TRAIN.value, "pairs": n_pairs, "seed": seed},
        search=[{"num_nodes": r.num_nodes if r.found else None, "loss": r.loss if r.found else None,
                 "k_coef": r.config.k_coef, "lr": r.config.lr, "seconds": r.seconds} for r in runs],
        loss_curve=best.loss_curve, seconds=sum(r.seconds for r in runs),
    )
    if out_dir is not None:
        circuit.save(out_dir)
    return circuit, runs


def validate_circuit(circuit_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None,
                     n_pairs: int = PRUNE_PAIRS, n_random: int = 10, progress: bool = True) -> Validation:
    """Faithfulness numbers of a circuit on its task's held-out test split; written to validation.json."""
    circuit = load_circuit(circuit_dir)
    model_dir = model_dir or circuit.model_dir
    check_circuit_model(circuit, circuit_dir, model_dir)
    hp = circuit.hyperparameters
    model, run_cfg, tok, ds, tt = _setup(model_dir, circuit.task, Split.TEST, n_pairs, circuit.data.get("seed", 0))
    train_ds = get_task(circuit.task).build(tok, Split.TRAIN, circuit.data.get("pairs", n_pairs),
                                            circuit.data.get("seed", 0))
    values = ablation_values(model, model_dir, run_cfg.data_dir, train_ds.prompt_tokens, progress)
    keep = circuit.keep_masks({n: s.width for n, s in model.node_sites().items()})
    result = validate(model, tt, keep, values, Ablation(circuit.ablation), hp.get("freeze_norms", False),
                      n_random=n_random)
    write_json(Path(circuit_dir) / "validation.json", result.as_dict())
    return result


def full_model_loss(run_dir: str | os.PathLike, task_name: str, n_pairs: int = PRUNE_PAIRS) -> float:
    from .prune import circuit_loss

    model, _, _, _, tt = _setup(run_dir, task_name, Split.TRAIN, n_pairs, 0)
    return circuit_loss(model, tt, None, {})[0]


def prune_all(run_dir: str | os.PathLike, out_root: str | os.PathLike, cfg: PruneConfig = PruneConfig(),
              budget: int = DEFAULT_BUDGET, n_pairs: int = PRUNE_PAIRS, include_controls: bool = True,
              max_full_loss: float = MAX_FULL_LOSS, progress: bool = True, log=print, reuse: bool = False) -> dict:
    """Prune every task the model does (and the controls); the rest are reported, not fatal.

    The summary is rewritten after every task. With `reuse`, tasks that an earlier call finished
    with the same weights and settings are taken from its summary instead of pruned again."""
    out_root = Path(out_root)
    summary = {"model": str(run_dir), "weights_sha256": sha256_file(Path(run_dir) / "model.safetensors"),
               "target_loss": cfg.target_loss, "ablation": cfg.ablation.value, "budget": budget, "pairs": n_pairs,
               "max_full_loss": max_full_loss, "prune_config": cfg.as_dict(), "tasks": {}}
    earlier = _earlier_rows(out_root, summary) if reuse else {}
    scores = {s["task"]: s for s in load_or_evaluate_run(run_dir, progress=progress)["scores"]}
    rows = summary["tasks"]
    for task in all_tasks(include_controls):
        if task.name in earlier:
            rows[task.name] = earlier[task.name]
            log(f"{task.name}: reused")
        else:
            rows[task.name] = _prune_and_validate(run_dir, out_root, task, cfg, budget, n_pairs, max_full_loss,
                                                  progress, log)
        score = scores[task.name]
        rows[task.name] |= {"test_accuracy": score["accuracy"], "bigram_accuracy": score["bigram_accuracy"],
                            "bigram_decided": bigram_decided(score["bigram_accuracy"])}
        _finish_summary(summary)
        write_json(out_root / "summary.json", summary)
    return summary


def _prune_and_validate(run_dir, out_root: Path, task, cfg: PruneConfig, budget: int, n_pairs: int,
                        max_full_loss: float, progress: bool, log) -> dict:
    full = full_model_loss(run_dir, task.name, n_pairs)
    if full > max_full_loss and not task.control:
        log(f"{task.name}: skipped, whole-model loss {full:.3f}")
        return {"num_nodes": None, "num_edges": None, "full_model_loss": full, "control": False,
                "error": f"the whole model's task loss {full:.3f} > {max_full_loss}: not attempted"}
    try:
        circuit, _ = prune_task(run_dir, task.name, out_root / task.name, cfg, budget, n_pairs, progress=progress)
        validation = validate_circuit(out_root / task.name, run_dir, n_pairs, progress=progress)
    except NoCircuit as e:
        log(f"{task.name}: no circuit at the target")
        return {"num_nodes": None, "num_edges": None, "full_model_loss": full, "error": str(e),
                "control": task.control}
    log(f"{task.name}: {circuit.num_nodes} nodes, {circuit.num_edges} edges")
    return {"num_nodes": circuit.num_nodes, "num_edges": circuit.num_edges, "full_model_loss": full,
            "loss": circuit.loss, "loss_calibrated": circuit.loss_calibrated,
            "test_loss": validation.sufficiency.loss, "necessity_loss": validation.necessity.loss,
            "random_loss": validation.random_circuits["mean_loss"],
            "role_drift_mean": validation.role_drift["mean"], "seconds": circuit.seconds, "control": task.control}


def _earlier_rows(out_root: Path, summary: dict) -> dict:
    """Rows of an earlier summary with the same weights and settings whose files are all still there."""
    path = out_root / "summary.json"
    if not path.is_file():
        return {}
    earlier = read_json(path, "prune-all summary")
    settings = ("weights_sha256", "target_loss", "ablation", "budget", "pairs", "max_full_loss", "prune_config")
    if any(earlier.get(k) != summary[k] for k in settings):
        return {}
    return {name: row for name, row in earlier.get("tasks", {}).items()
            if row.get("num_nodes") is None or all((out_root / name / f).is_file() for f in CIRCUIT_FILES)}


CIRCUIT_FILES = ("circuit.json", "circuit.safetensors", "validation.json")


def bigram_decided(bigram_accuracy: float | None) -> bool:
    return bigram_accuracy is not None and bigram_accuracy >= BIGRAM_DECIDED


def geomean_edges(edge_counts: list[int]) -> float | None:
    """Geometric mean of edge counts; a 0-edge circuit counts as 1."""
    return math.exp(sum(math.log(max(e, 1)) for e in edge_counts) / len(edge_counts)) if edge_counts else None


def shared_geomean(summaries: dict[str, dict]) -> dict:
    """Geometric mean of edges of each model's circuits over the same tasks: those every model has a
    circuit for, leaving out controls and bigram-decided tasks. `summaries`: name -> prune-all summary."""
    def counted(row: dict | None) -> bool:
        return row is not None and row["num_edges"] is not None and not row["control"] and not row["bigram_decided"]

    first = next(iter(summaries.values()))["tasks"]
    tasks = [t for t in first if all(counted(s["tasks"].get(t)) for s in summaries.values())]
    return {"tasks": tasks,
            "geomean_edges": {n: geomean_edges([s["tasks"][t]["num_edges"] for t in tasks]) for n, s in summaries.items()}}


def _finish_summary(summary: dict) -> None:
    rows = summary["tasks"]
    found = [n for n, r in rows.items() if r["num_edges"] is not None and not r["control"]]
    counted = [n for n in found if not rows[n]["bigram_decided"]]
    summary["geomean_edges"] = geomean_edges([rows[n]["num_edges"] for n in counted])
    summary["geomean_tasks"] = counted
    summary["bigram_decided"] = [n for n in found if rows[n]["bigram_decided"]]
    summary["tasks_with_circuit"] = len(found)
