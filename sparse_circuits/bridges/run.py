"""A bridged run: a weight-sparse model trained with bridges to a frozen dense run.

RUN_DIR/ is an ordinary run directory (the sparse model works with every command) plus
  bridges.json            the bridge config, the dense run and the digest of its weights
  bridges.safetensors     the encoders and decoders (also in every checkpoint)
  bridge_quality.json     NMSE per site both ways, hybrid KL and loss per switch point (validation)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..checkpoint import load_module
from ..config import ModelKind, RunConfig, dataclass_from_dict, to_dict
from ..data import check_same_tokenizer
from ..errors import UserError
from ..fileio import read_json, write_json
from ..model import GPT
from ..runs import BRIDGE_RECORD, Run
from ..train import init_distributed, train
from .core import BRIDGES_NAME, BridgeConfig, Bridged, Bridges


def load_dense(dense_dir: str | os.PathLike, device: str = "cpu") -> GPT:
    """The dense run's model, frozen."""
    dense, _ = Run(dense_dir).load_model(device=device, sparse_threshold=0.0)
    for p in dense.parameters():
        p.requires_grad_(False)
    return dense


def check_pair(cfg: RunConfig, dense_dir: Path, dense: GPT) -> None:
    """The two models must share the number of layers and the tokenizer; one-line errors otherwise."""
    dcfg = dense.cfg
    if cfg.model.n_layer != dcfg.n_layer:
        raise UserError(f"bridge: the sparse model has {cfg.model.n_layer} layers and the dense run {dense_dir} has "
                        f"{dcfg.n_layer}; bridges pair the layers one to one, so give model.n_layer {dcfg.n_layer}")
    if cfg.model.context > dcfg.context:
        raise UserError(f"bridge: model.context {cfg.model.context} exceeds the dense model's {dcfg.context}")
    check_same_tokenizer(cfg.data_dir, Run(dense_dir).tokenizer(), f"the dense run {dense_dir}")


def bridge_sites(model: GPT) -> list[str]:
    return list(model.residual_sites())


def coupling(dense: GPT, bcfg: BridgeConfig, seed: int):
    def couple(sparse: GPT) -> Bridged:
        bridges = Bridges(bridge_sites(sparse), dense.cfg.d_model, sparse.cfg.d_model, bcfg.encoder_topk)
        return Bridged(sparse, bridges, dense, bcfg, seed)
    return couple


@dataclass
class BridgeRecord:
    """RUN_DIR/bridges.json: the bridge config and the dense run it was trained against (written first,
    so that a killed run resumes against the same record)."""
    bridge: dict  # BridgeConfig as a dict
    dense_run: str
    dense_weights_sha256: str

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> BridgeRecord:
        d = read_json(path, "bridge record")
        try:
            return cls(d["bridge"], d["dense_run"], d["dense_weights_sha256"])
        except (KeyError, TypeError) as e:
            raise UserError(f"{path}: damaged bridge record ({type(e).__name__}: {e}); train the bridges again") \
                from None


def train_bridged(cfg: RunConfig, dense_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  bcfg: BridgeConfig | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Train `cfg`'s sparse model with bridges to the dense run; returns the final metrics."""
    dense_dir, out = Path(dense_dir), Run(out_dir)
    bcfg = (bcfg or BridgeConfig()).validate()
    dense_sparsity = Run(dense_dir).config().sparsity
    if dense_sparsity.kind != ModelKind.DENSE:  # [ours] the method couples a sparse model to a dense one
        raise UserError(f"bridge: --dense-run {dense_dir} is weight-sparse (nonzero_frac "
                        f"{dense_sparsity.nonzero_frac:g}); bridges couple a sparse model to a dense one: give a run "
                        "trained with --dense")
    dense = load_dense(dense_dir, cfg.train.device)
    check_pair(cfg, dense_dir, dense)
    record = BridgeRecord(to_dict(bcfg), str(dense_dir.resolve()), Run(dense_dir).weights_sha256())
    if resume and out.bridge_record_path.is_file():
        saved = BridgeRecord.load(out.bridge_record_path)
        for key in ("bridge", "dense_weights_sha256"):
            if getattr(saved, key) != getattr(record, key):
                raise UserError(f"{out}: a resumed bridged run cannot change its {key.replace('_', ' ')} "
                                f"(saved {getattr(saved, key)!r}); start a new run")
    # Only the main process writes: under torchrun each rank's atomic write would remove the other's
    # temporary file as a stale one.
    main = init_distributed(cfg.train.device).main
    if main and not out.bridge_record_path.is_file():  # written first: a killed run resumes against the same record
        record.save(out.bridge_record_path)
    final = train(cfg, out.dir, resume=resume, progress=progress, couple=coupling(dense, bcfg, cfg.train.seed))
    if main and "bridges" in final:
        write_json(out.bridge_quality_path, final["bridges"])
    return final


@dataclass
class BridgedPair:
    """A finished bridged run, loaded: the sparse model, its bridges and the dense model."""

    sparse: GPT
    bridges: Bridges
    dense: GPT
    config: BridgeConfig
    run_dir: Path

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "cpu") -> "BridgedPair":
        run = Run(run_dir)
        run_dir = run.dir
        if not run.bridge_record_path.is_file():
            raise UserError(f"{run_dir}: not a bridged run (no {BRIDGE_RECORD}); train one with `sparse-circuits bridge`")
        record = BridgeRecord.load(run.bridge_record_path)
        bcfg = dataclass_from_dict(BridgeConfig, record.bridge, f"{run.bridge_record_path}: bridge")
        dense = Run(record.dense_run)
        if not dense.has_weights():
            raise UserError(f"{run_dir}: its dense run {dense.dir} is gone; restore it there")
        if dense.weights_sha256() != record.dense_weights_sha256:
            raise UserError(f"{run_dir}: the dense run {dense.dir} has changed since the bridges were trained")
        sparse, _ = run.load_model(device=device)
        dense_model = load_dense(dense.dir, device)
        bridges = Bridges(bridge_sites(sparse), dense_model.cfg.d_model, sparse.cfg.d_model, bcfg.encoder_topk)
        load_module(bridges, run_dir / f"{BRIDGES_NAME}.safetensors", "bridge weights")
        bridges.to(device).eval()
        return cls(sparse, bridges, dense_model, bcfg, run_dir)


def sparse_alone_comparison(bridged_dir: str | os.PathLike, alone_dir: str | os.PathLike) -> dict:
    """Validation loss of the bridged sparse model against the same config trained alone."""
    alone, bridged = Run(alone_dir), Run(bridged_dir)
    a, b = alone.config(), bridged.config()
    if to_dict(a.model) != to_dict(b.model) or a.train.steps != b.train.steps:
        raise UserError(f"{alone_dir}: not the same model config and steps as {bridged_dir}; train the comparison run "
                        "with the bridged run's config.json")
    la, lb = alone.final_metrics(), bridged.final_metrics()
    return {"alone_val_loss": la.get("val_loss"), "bridged_val_loss": lb.get("val_loss"),
            "cost": (lb.get("val_loss") or float("nan")) - (la.get("val_loss") or float("nan"))}
