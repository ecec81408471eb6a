"""Circuits across training: one task pruned at several checkpoints of one run.

When does a circuit form, and does it shrink as training goes on? Each kept checkpoint
(RUN_DIR/checkpoints/step_N) becomes a small run directory of its own (config, tokenizer and
that checkpoint's weights) under OUT/step_N, so that pruning, its cached means and the circuit's
weight-hash check work on it exactly as on a finished run. OUT/history.json holds one
`HistoryPoint` per checkpoint; it is rewritten after each one, and a re-run reuses the circuits
already found for the same weights and settings.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_path, read_json, write_json
from ..runs import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, Run, file_sha256
from ..tasks import get_task
from ..model import GPT
from .api import DEFAULT_BUDGET, PRUNE_PAIRS, LoadedRun, NoCircuit, full_model_loss, prune_task
from .circuit import load_circuit
from .prune import PruneConfig

CIRCUIT_HISTORY_FILE = "history.json"


@dataclass
class HistoryPoint:
    step: int
    tokens: int
    val_loss: float | None  # the training log's validation loss at this step (sampled batches)
    full_model_loss: float  # the whole model's task loss on the pruning pairs
    num_nodes: int | None = None  # None: no circuit reaches the target at this checkpoint
    num_edges: int | None = None
    circuit_loss: float | None = None
    seconds: float | None = None
    # Nonzero share of the weights the sparsity projection acts on, counted in the checkpoint: during the
    # L0 anneal a circuit can shrink simply because the model has fewer weights.
    weight_density: float | None = None


@dataclass
class CircuitHistory:
    run: str
    task: str
    target_loss: float
    points: list[HistoryPoint]

    def as_dict(self) -> dict:
        return {"run": self.run, "task": self.task, "target_loss": self.target_loss,
                "points": [asdict(p) for p in self.points]}

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CircuitHistory":
        d = read_json(path, "circuit history")
        try:
            return cls(d["run"], d["task"], d["target_loss"], [HistoryPoint(**p) for p in d["points"]])
        except (KeyError, TypeError) as e:
            raise UserError(f"{path}: damaged circuit history ({type(e).__name__}: {e}); "
                            "run `sparse-circuits circuit-history` again") from None


def checkpoint_view(run: Run, step: int, out: Path) -> tuple[Run, str]:
    """(OUT/step_N, its weights' sha256): a run directory holding the checkpoint at `step` (copied once)."""
    src = run.checkpoint_dir(step)
    view = Run(out / src.name)
    wanted = file_sha256(src / WEIGHTS_FILE)
    if view.has_weights() and view.weights_sha256() == wanted:
        return view, wanted
    view.dir.mkdir(parents=True, exist_ok=True)
    for name, source in ((CONFIG_FILE, run.config_path), (TOKENIZER_FILE, run.tokenizer_path),
                         (WEIGHTS_FILE, src / WEIGHTS_FILE)):
        with atomic_path(view.dir / name) as tmp:
            shutil.copyfile(source, tmp)
    return view, wanted


def weight_density(model: GPT) -> float:
    """Nonzero share of a model's sparsified parameters (linear weights and biases, embeddings)."""
    params = list(model.sparsified_parameters().values())
    return sum(int((p != 0).sum()) for p in params) / sum(p.numel() for p in params)


def circuit_history(run_dir: str | os.PathLike, task_name: str, out_dir: str | os.PathLike,
                    cfg: PruneConfig = PruneConfig(), budget: int = DEFAULT_BUDGET, n_pairs: int = PRUNE_PAIRS,
                    steps: list[int] | None = None, progress: bool = True, log=print) -> CircuitHistory:
    """Prune `task_name` at each kept checkpoint of a run (or at `steps`)."""
    run, out = Run(run_dir), Path(out_dir)
    get_task(task_name)  # an unknown task fails before anything is written
    cfg_run = run.config()
    kept = sorted(int(p.name[5:]) for p in run.checkpoint_dirs())
    if steps:
        missing = [s for s in steps if s not in kept]
        if missing:
            raise UserError(f"{run_dir}: no checkpoint at step {missing[0]} (kept: {', '.join(map(str, kept)) or 'none'})")
        kept = sorted(steps)
    if len(kept) < 2:
        raise UserError(f"{run_dir}: {len(kept)} checkpoint(s) kept; a history needs >= 2 (train with "
                        "train.keep_checkpoints 0 and a train.checkpoint_every that leaves several)")
    path = out / CIRCUIT_HISTORY_FILE
    history = CircuitHistory(str(run_dir), task_name, cfg.target_loss, [])
    tokens_per_step = cfg_run.train.batch_size * cfg_run.model.context
    val = {rec["step"]: rec["val_loss"] for rec in run.metric_records() if "val_loss" in rec}
    for i, step in enumerate(kept, 1):
        view, weights_sha256 = checkpoint_view(run, step, out)
        loaded = LoadedRun.load(view)
        full = full_model_loss(loaded, task_name, n_pairs)
        point = HistoryPoint(step, step * tokens_per_step, val.get(step), full,
                             weight_density=weight_density(loaded.model))
        circuit_dir = view.circuits_dir / task_name
        settings = {"weights_sha256": weights_sha256, "prune_config": cfg.as_dict(),
                    "pairs": n_pairs, "budget": budget}
        none_file = view.circuits_dir / f"{task_name}.none.json"
        circuit = _reusable(circuit_dir, settings)
        if circuit is None and not (none_file.is_file() and read_json(none_file, "no-circuit record")["settings"] == settings):
            try:
                circuit, _ = prune_task(loaded, task_name, circuit_dir, cfg, budget, n_pairs, progress=progress)
            except NoCircuit as e:  # recorded, so that a re-run does not search again
                write_json(none_file, {"error": str(e), "settings": settings})
        if circuit is not None:
            point.num_nodes, point.num_edges = circuit.num_nodes, circuit.num_edges
            point.circuit_loss, point.seconds = circuit.loss, circuit.seconds
        history.points.append(point)
        write_json(path, history.as_dict())
        found = f"{point.num_nodes} nodes, {point.num_edges} edges" if point.num_edges is not None else "no circuit"
        log(f"[{i}/{len(kept)}] step {step}: weights {point.weight_density:.3f} nonzero, whole-model task loss "
            f"{full:.3f}; {found}")
    return history


def _reusable(circuit_dir: Path, settings: dict):
    """The circuit an earlier call found here with the same weights and settings, or None."""
    if not (circuit_dir / "circuit.json").is_file():
        return None
    try:
        c = load_circuit(circuit_dir)
    except UserError:
        return None
    same = (c.model_sha256 == settings["weights_sha256"] and c.config.as_dict() == settings["prune_config"]
            and c.sample.pairs == settings["pairs"] and len(c.search) == settings["budget"])
    return c if same else None
