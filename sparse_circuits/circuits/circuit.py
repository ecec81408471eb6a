"""The circuit file format, version 1.

CIRCUIT_DIR/circuit.json
  format, format_version, task, model (run directory and SHA-256 of its weights), ablation,
  target_loss, loss, loss_calibrated, calibration {scale, shift}, nodes {site: [indices]},
  num_nodes, num_edges, num_residual_links, num_qk_pairs, edges [[src, dst, weight]],
  residual_links [[src, dst]], qk_pairs [[q, k]], hyperparameters, search [per run: num_nodes,
  loss, k_coef, lr], data {split, pairs, seed}, loss_curve [[k, loss]], seconds
CIRCUIT_DIR/circuit.safetensors
  tau.{site} (the learned mask parameters), mean.{site} (the ablation values used)

Losses are task losses in nats per sequence, mean over sequences (never summed over a pair).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import read_json, read_safetensors, write_json, write_safetensors
from ..model import GPT
from ..nodes import NodeId
from ..runs import Run
from ..tasks import Split
from .edges import Edge
from .intervention import CircuitIntervention
from .masks import Ablation, keep_masks
from .prune import Calibration, PruneConfig
from .values import NodeValues, ResampledValues

CIRCUIT_FORMAT = "sparse-circuits-circuit"
CIRCUIT_FORMAT_VERSION = 1


VALIDATION_FILE = "validation.json"
THROUGH_BRIDGE_FILE = "through_bridge.json"
DERIVED_FILES = (VALIDATION_FILE, THROUGH_BRIDGE_FILE)  # computed from a circuit, kept beside it
RESAMPLE_POOL_TENSOR = "resample.pool"  # a resample-ablated circuit's contexts, in circuit.safetensors

@dataclass(frozen=True)
class TaskSample:
    """Which task pairs a circuit was pruned on."""
    split: Split
    pairs: int
    seed: int


@dataclass(frozen=True)
class SearchRun:
    """One run of the pruning search (None: it found no circuit at the target)."""
    num_nodes: int | None
    loss: float | None
    k_coef: float
    lr: float
    seconds: float = 0.0


@dataclass
class Circuit:
    task: str
    model_dir: str
    model_sha256: str
    config: PruneConfig  # the pruning run that found it (target loss, ablation, frozen norms, ...)
    loss: float
    loss_calibrated: float
    calibration: Calibration
    nodes: list[NodeId]  # forward order
    edges: list[Edge]
    residual_links: list[Edge]
    qk_pairs: list[tuple[NodeId, NodeId]]
    tau: dict[str, torch.Tensor]  # per node site
    means: NodeValues  # what the removed nodes took in pruning: constants per node site, or resampled values
    sample: TaskSample
    search: list[SearchRun] = field(default_factory=list)
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ablation(self) -> Ablation:
        return self.config.ablation

    @property
    def target_loss(self) -> float:
        return self.config.target_loss

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def nodes_by_site(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for node in self.nodes:
            out.setdefault(node.site, []).append(node.index)
        return out

    def intervention(self, model: GPT) -> CircuitIntervention:
        """The circuit on `model`: its nodes kept, the rest set to the values it was pruned with."""
        keep = keep_masks(self.nodes, {n: s.width for n, s in model.node_sites().items()})
        return CircuitIntervention.keeping(keep, self.means, self.config.freeze_norms)

    def save(self, out_dir: str | os.PathLike) -> None:
        """Write the circuit; results computed from an earlier circuit in the same directory (its
        validation, its reading through a bridge) are removed: they describe another circuit."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in DERIVED_FILES:
            (out / name).unlink(missing_ok=True)
        tensors = {f"tau.{k}": v for k, v in self.tau.items()}
        if isinstance(self.means, ResampledValues):  # the pool of contexts travels with the circuit
            tensors |= {RESAMPLE_POOL_TENSOR: self.means.pool}
        else:
            tensors |= {f"mean.{k}": v for k, v in self.means.items()}
        write_safetensors(out / "circuit.safetensors", tensors)
        write_json(out / "circuit.json", {
            "format": CIRCUIT_FORMAT, "format_version": CIRCUIT_FORMAT_VERSION,
            "task": self.task, "model": {"dir": self.model_dir, "weights_sha256": self.model_sha256},
            "ablation": self.ablation.value, "target_loss": self.target_loss, "loss": self.loss,
            "loss_calibrated": self.loss_calibrated,
            "calibration": {"scale": self.calibration.scale, "shift": self.calibration.shift},
            "nodes": self.nodes_by_site(), "num_nodes": self.num_nodes, "num_edges": self.num_edges,
            "num_residual_links": len(self.residual_links), "num_qk_pairs": len(self.qk_pairs),
            "edges": [[str(e.src), str(e.dst), e.weight] for e in self.edges],
            "residual_links": [[str(e.src), str(e.dst)] for e in self.residual_links],
            "qk_pairs": [[str(q), str(k)] for q, k in self.qk_pairs], "hyperparameters": self.config.as_dict(),
            "data": {"split": self.sample.split.value, "pairs": self.sample.pairs, "seed": self.sample.seed},
            "search": [vars(r) for r in self.search], "loss_curve": [list(p) for p in self.loss_curve],
            "seconds": self.seconds,
        } | ({"resample_seed": self.means.seed} if isinstance(self.means, ResampledValues) else {}))


def load_circuit(circuit_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None) -> Circuit:
    """Read a circuit; with `model_dir`, refuse it unless it was pruned from that model's weights."""
    d = Path(circuit_dir)
    path = d / "circuit.json"
    meta = read_json(path, "circuit")
    if not isinstance(meta, dict) or meta.get("format") != CIRCUIT_FORMAT:
        raise UserError(f"{path}: not a sparse-circuits circuit file")
    if meta.get("format_version") != CIRCUIT_FORMAT_VERSION:
        raise UserError(f"{path}: circuit format version {meta.get('format_version')} is not "
                        f"supported (this version reads {CIRCUIT_FORMAT_VERSION}); prune again")
    tensors = read_safetensors(d / "circuit.safetensors", "circuit tensors")
    try:
        data = meta["data"]
        circuit = Circuit(
            task=meta["task"], model_dir=meta["model"]["dir"], model_sha256=meta["model"]["weights_sha256"],
            config=PruneConfig.from_dict(meta["hyperparameters"], f"{path} hyperparameters"),
            loss=meta["loss"], loss_calibrated=meta["loss_calibrated"],
            calibration=Calibration(meta["calibration"]["scale"], meta["calibration"]["shift"]),
            nodes=_nodes(meta["nodes"], path),
            edges=[Edge(NodeId.parse(a), NodeId.parse(b), w) for a, b, w in meta["edges"]],
            residual_links=[Edge(NodeId.parse(a), NodeId.parse(b)) for a, b in meta["residual_links"]],
            qk_pairs=[(NodeId.parse(q), NodeId.parse(k)) for q, k in meta["qk_pairs"]],
            tau={k[4:]: v for k, v in tensors.items() if k.startswith("tau.")},
            means=(ResampledValues(tensors[RESAMPLE_POOL_TENSOR], _count(meta["resample_seed"], "resample_seed", path))
                   if RESAMPLE_POOL_TENSOR in tensors else
                   {k[5:]: v for k, v in tensors.items() if k.startswith("mean.")}),
            sample=TaskSample(Split(data["split"]), _count(data["pairs"], "data.pairs", path),
                              _count(data["seed"], "data.seed", path)),
            search=[SearchRun(**r) for r in meta.get("search", [])],
            loss_curve=[tuple(p) for p in meta.get("loss_curve", [])], seconds=meta.get("seconds", 0.0),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: damaged circuit file ({type(e).__name__}: {e}); prune again") from None
    if model_dir is not None:
        check_circuit_model(circuit, d, model_dir)
    return circuit


def _count(value, what: str, path: Path) -> int:
    """A non-negative integer from a circuit file (JSON's true is not 1, 13.7 is not 13)."""
    if type(value) is not int or value < 0:
        raise UserError(f"{path}: {what} must be a non-negative integer, got {value!r}; prune again")
    return value


def _nodes(by_site, path: Path) -> list[NodeId]:
    if not isinstance(by_site, dict):
        raise UserError(f"{path}: nodes must map each site to a list of channel indices; prune again")
    out = []
    for site, idx in by_site.items():
        if not isinstance(idx, list):
            raise UserError(f"{path}: nodes of {site} must be a list of channel indices; prune again")
        out += [NodeId.at(site, _count(i, f"a node index of {site}", path)) for i in idx]
    return sorted(out)


def check_circuit_model(circuit: Circuit, circuit_dir: str | os.PathLike, model_dir: str | os.PathLike) -> None:
    """Refuse a circuit that was pruned from other weights than model_dir's."""
    if not Run(model_dir).has_weights():
        raise UserError(f"{circuit_dir}: its model {model_dir} has no weights there (moved or deleted?); "
                        "pass the run it was pruned from with --model RUN_DIR")
    if Run(model_dir).weights_sha256() != circuit.model_sha256:
        raise UserError(f"{circuit_dir}: circuit was pruned from another model ({circuit.model_dir}), not "
                        f"{model_dir}; prune this model or pass the circuit's own model")
