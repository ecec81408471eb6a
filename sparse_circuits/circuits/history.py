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

from ..checkpoint import checkpoint_dirs, load_run_config
from ..errors import UserError
from ..fileio import atomic_path, read_json, sha256_file, write_json
from ..tasks import get_task
from .api import DEFAULT_BUDGET, PRUNE_PAIRS, NoCircuit, full_model_loss, prune_task
from .circuit import load_circuit
from .prune import PruneConfig

HISTORY_FILE = "history.json"


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


def checkpoint_view(run_dir: Path, step: int, out: Path) -> tuple[Path, str]:
    """(OUT/step_N, its weights' sha256): a run directory holding the checkpoint at `step` (copied once)."""
    src = run_dir / "checkpoints" / f"step_{step:08d}"
    view = out / src.name
    weights = view / "model.safetensors"
    wanted = sha256_file(src / "model.safetensors")
    if weights.is_file() and sha256_file(weights) == wanted:
        return view, wanted
    view.mkdir(parents=True, exist_ok=True)
    for name, source in (("config.json", run_dir / "config.json"), ("tokenizer.json", run_dir / "tokenizer.json"),
                         ("model.safetensors", src / "model.safetensors")):
        with atomic_path(view / name) as tmp:
            shutil.copyfile(source, tmp)
    return view, wanted


def weight_density(run_dir: Path) -> float:
    """Nonzero share of a run's sparsified parameters (linear weights and biases, embeddings)."""
    from ..checkpoint import load_model  # the model stack; only needed here

    model, _ = load_model(run_dir, sparse_threshold=0.0)
    params = list(model.sparsified_parameters().values())
    return sum(int((p != 0).sum()) for p in params) / sum(p.numel() for p in params)


def _val_losses(run_dir: Path) -> dict[int, float]:
    from ..train import metric_records  # train imports the model stack; only needed here

    return {rec["step"]: rec["val_loss"] for rec in metric_records(run_dir) if "val_loss" in rec}


def circuit_history(run_dir: str | os.PathLike, task_name: str, out_dir: str | os.PathLike,
                    cfg: PruneConfig = PruneConfig(), budget: int = DEFAULT_BUDGET, n_pairs: int = PRUNE_PAIRS,
                    steps: list[int] | None = None, progress: bool = True, log=print) -> CircuitHistory:
    """Prune `task_name` at each kept checkpoint of a run (or at `steps`)."""
    run_dir, out = Path(run_dir), Path(out_dir)
    get_task(task_name)  # an unknown task fails before anything is written
    cfg_run = load_run_config(run_dir)
    kept = sorted(int(p.name[5:]) for p in checkpoint_dirs(run_dir))
    if steps:
        missing = [s for s in steps if s not in kept]
        if missing:
            raise UserError(f"{run_dir}: no checkpoint at step {missing[0]} (kept: {', '.join(map(str, kept)) or 'none'})")
        kept = sorted(steps)
    if len(kept) < 2:
        raise UserError(f"{run_dir}: {len(kept)} checkpoint(s) kept; a history needs >= 2 (train with "
                        "train.keep_checkpoints 0 and a train.checkpoint_every that leaves several)")
    path = out / HISTORY_FILE
    history = CircuitHistory(str(run_dir), task_name, cfg.target_loss, [])
    tokens_per_step = cfg_run.train.batch_size * cfg_run.model.context
    val = _val_losses(run_dir)
    for i, step in enumerate(kept, 1):
        view, weights_sha256 = checkpoint_view(run_dir, step, out)
        full = full_model_loss(view, task_name, n_pairs)
        point = HistoryPoint(step, step * tokens_per_step, val.get(step), full, weight_density=weight_density(view))
        circuit_dir = view / "circuits" / task_name
        settings = {"weights_sha256": weights_sha256, "prune_config": cfg.as_dict(),
                    "pairs": n_pairs, "budget": budget}
        none_file = view / "circuits" / f"{task_name}.none.json"
        circuit = _reusable(circuit_dir, settings)
        if circuit is None and not (none_file.is_file() and read_json(none_file, "no-circuit record")["settings"] == settings):
            try:
                circuit, _ = prune_task(view, task_name, circuit_dir, cfg, budget, n_pairs, progress=progress)
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
