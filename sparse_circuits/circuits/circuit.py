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
from ..fileio import read_json, read_safetensors, sha256_file, write_json, write_safetensors

CIRCUIT_FORMAT = "sparse-circuits-circuit"
CIRCUIT_FORMAT_VERSION = 1


@dataclass
class Circuit:
    task: str
    model_dir: str
    model_sha256: str
    ablation: str
    target_loss: float
    loss: float
    loss_calibrated: float
    calibration: dict
    nodes: dict[str, list[int]]
    edges: list[tuple[str, str, float]]
    residual_links: list[tuple[str, str]]
    qk_pairs: list[tuple[str, str]]
    hyperparameters: dict
    tau: dict[str, torch.Tensor]
    means: dict[str, torch.Tensor]
    data: dict = field(default_factory=dict)
    search: list[dict] = field(default_factory=list)
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def num_nodes(self) -> int:
        return sum(len(v) for v in self.nodes.values())

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def keep_masks(self, widths: dict[str, int]) -> dict[str, torch.Tensor]:
        keep = {name: torch.zeros(w, dtype=torch.bool) for name, w in widths.items()}
        for name, idx in self.nodes.items():
            keep[name][idx] = True
        return keep

    def save(self, out_dir: str | os.PathLike) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"tau.{k}": v for k, v in self.tau.items()} | {f"mean.{k}": v for k, v in self.means.items()}
        write_safetensors(out / "circuit.safetensors", tensors)
        write_json(out / "circuit.json", {
            "format": CIRCUIT_FORMAT, "format_version": CIRCUIT_FORMAT_VERSION,
            "task": self.task, "model": {"dir": self.model_dir, "weights_sha256": self.model_sha256},
            "ablation": self.ablation, "target_loss": self.target_loss, "loss": self.loss,
            "loss_calibrated": self.loss_calibrated, "calibration": self.calibration,
            "nodes": self.nodes, "num_nodes": self.num_nodes, "num_edges": self.num_edges,
            "num_residual_links": len(self.residual_links), "num_qk_pairs": len(self.qk_pairs),
            "edges": [list(e) for e in self.edges], "residual_links": [list(e) for e in self.residual_links],
            "qk_pairs": [list(p) for p in self.qk_pairs], "hyperparameters": self.hyperparameters,
            "data": self.data, "search": self.search, "loss_curve": [list(p) for p in self.loss_curve],
            "seconds": self.seconds,
        })


def load_circuit(circuit_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None) -> Circuit:
    """Read a circuit; with `model_dir`, refuse it unless it was pruned from that model's weights."""
    d = Path(circuit_dir)
    meta = read_json(d / "circuit.json", "circuit")
    if meta.get("format") != CIRCUIT_FORMAT:
        raise UserError(f"{d / 'circuit.json'}: not a sparse-circuits circuit file")
    if meta.get("format_version") != CIRCUIT_FORMAT_VERSION:
        raise UserError(f"{d / 'circuit.json'}: circuit format version {meta.get('format_version')} is not "
                        f"supported (this version reads {CIRCUIT_FORMAT_VERSION}); prune again")
    tensors = read_safetensors(d / "circuit.safetensors", "circuit tensors")
    circuit = Circuit(
        task=meta["task"], model_dir=meta["model"]["dir"], model_sha256=meta["model"]["weights_sha256"],
        ablation=meta["ablation"], target_loss=meta["target_loss"], loss=meta["loss"],
        loss_calibrated=meta["loss_calibrated"], calibration=meta["calibration"], nodes=meta["nodes"],
        edges=[tuple(e) for e in meta["edges"]], residual_links=[tuple(e) for e in meta["residual_links"]],
        qk_pairs=[tuple(p) for p in meta["qk_pairs"]], hyperparameters=meta["hyperparameters"],
        tau={k[4:]: v for k, v in tensors.items() if k.startswith("tau.")},
        means={k[5:]: v for k, v in tensors.items() if k.startswith("mean.")},
        data=meta.get("data", {}), search=meta.get("search", []),
        loss_curve=[tuple(p) for p in meta.get("loss_curve", [])], seconds=meta.get("seconds", 0.0),
    )
    if model_dir is not None:
        check_circuit_model(circuit, d, model_dir)
    return circuit


def check_circuit_model(circuit: Circuit, circuit_dir: str | os.PathLike, model_dir: str | os.PathLike) -> None:
    """Refuse a circuit that was pruned from other weights than model_dir's."""
    if sha256_file(Path(model_dir) / "model.safetensors") != circuit.model_sha256:
        raise UserError(f"{circuit_dir}: circuit was pruned from another model ({circuit.model_dir}), not "
                        f"{model_dir}; prune this model or pass the circuit's own model")
