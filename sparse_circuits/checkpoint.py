"""Run directories: the on-disk model format and training checkpoints.

RUN_DIR/
  config.json            the resolved RunConfig (strictly validated on load)
  tokenizer.json         the tokenizer the model was trained with
  model.safetensors      latest weights; metadata: format, step, hash of the model config
  metrics.jsonl          one JSON object per log / evaluation
  config_history.jsonl   options changed on --resume (train.steps, lr, device, threads)
  bridges.json, bridges.safetensors, bridge_quality.json, steering/
                         a bridged run's extras (sparse_circuits/bridges, docs/bridges.md)
  checkpoints/step_N/    model.safetensors, optimizer.safetensors, state.json: a whole
                         checkpoint, written to a temporary directory and renamed, so a killed
                         run always finds a complete one to resume from
Every safetensors file carries a digest of its tensors (fileio.CONTENT_DIGEST), checked on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .config import ModelConfig, Positions, RunConfig, run_config_from_dict, to_dict
from .errors import UserError
from .fileio import (
    fsync_path,
    read_json,
    read_safetensors,
    read_safetensors_metadata,
    write_json,
    write_safetensors,
)
from .kernels import SPARSE_DENSITY_THRESHOLD, keep_freed_memory
from .model import GPT

MODEL_FORMAT = "sparse-circuits-model"
BRIDGE_RECORD = "bridges.json"  # a bridged run: bridge config, dense run, digest of its weights
BRIDGE_QUALITY_FILE = "bridge_quality.json"
STEERING_DIR = "steering"
MODEL_FORMAT_VERSION = "1"


def model_config_hash(cfg: ModelConfig) -> str:
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


# Model config keys added later, with the value every model saved before them had.
_LATER_KEYS = {"norm_eps": 1e-5, "positions_at_input_site": False}


def _hashes_accepted(cfg: ModelConfig) -> set[str]:
    """This config's hash, and the ones weights saved by earlier versions carry for the same
    model: before the keys of _LATER_KEYS existed, and before `positions` replaced
    `learned_positions: bool`."""
    digest = lambda d: hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    current = to_dict(cfg)
    accepted = {digest(current)}
    if any(current[k] != v for k, v in _LATER_KEYS.items()):
        return accepted
    older = {k: v for k, v in current.items() if k not in _LATER_KEYS}
    accepted.add(digest(older))
    if cfg.positions != Positions.CONCAT:
        legacy = dict(older)
        legacy["learned_positions"] = legacy.pop("positions") == Positions.LEARNED.value
        del legacy["d_pos"]
        accepted.add(digest(legacy))
    return accepted


def save_weights(path: Path, model: GPT, step: int) -> None:
    save_state_dict(path, model.state_dict(), model.cfg, step)


def save_state_dict(path: Path, tensors: dict[str, torch.Tensor], cfg: ModelConfig, step: int) -> None:
    """A GPT state dict for `cfg` as our model file (for writers that never build the GPT)."""
    meta = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "step": str(step),
            "model_config_sha": model_config_hash(cfg)}
    write_safetensors(path, tensors, metadata=meta)


def load_weights_into(model: GPT, path: Path, assign: bool = False) -> int:
    """Strict load: every key present, no extra key, every shape equal. Returns the saved step.
    `assign`: the model's tensors become the loaded ones (for a model built on the meta device)."""
    tensors = read_safetensors(path, "model weights")
    meta = read_safetensors_metadata(path)
    if meta.get("format") != MODEL_FORMAT:
        raise UserError(f"{path}: not a sparse-circuits model file (format {meta.get('format')!r})")
    if meta.get("model_config_sha") not in _hashes_accepted(model.cfg):
        raise UserError(f"{path}: weights were saved for a different model config than this config.json; "
                        "use the config.json that came with these weights")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise UserError(f"{path}: checkpoint does not match the model "
                        f"(missing {missing[:3]}, unexpected {extra[:3]}); use the config.json it was saved with")
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise UserError(f"{path}: tensor {name} has shape {tuple(t.shape)}, the model expects "
                            f"{tuple(expected[name].shape)}; use the config.json it was saved with")
    model.load_state_dict(tensors, strict=True, assign=assign)
    return int(meta.get("step", 0))


def load_run_config(run_dir: str | os.PathLike) -> RunConfig:
    path = Path(run_dir) / "config.json"
    return run_config_from_dict(read_json(path, "run config"), where=str(path))


def load_model(run_dir: str | os.PathLike, device: str = "cpu", step: int | None = None,
               sparse_threshold: float = SPARSE_DENSITY_THRESHOLD) -> tuple[GPT, RunConfig]:
    """The trained model of a run directory (or its checkpoint at `step`), in eval mode.

    On the CPU, weights with a nonzero fraction below `sparse_threshold` run as sparse matrices
    (GPT.use_sparse_weights; 0 keeps every product dense). Results equal the dense ones within
    float tolerance."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    keep_freed_memory()
    with torch.device("meta"):  # no random init: the weights come from the file (half the peak memory)
        model = GPT(cfg.model)
    path = run_dir / "model.safetensors" if step is None else run_dir / "checkpoints" / f"step_{step:08d}" / "model.safetensors"
    if step is not None and not path.is_file():
        kept = ", ".join(p.name[5:].lstrip("0") for p in checkpoint_dirs(run_dir)) or "none"
        raise UserError(f"{run_dir}: no checkpoint at step {step} (kept: {kept})")
    load_weights_into(model, path, assign=True)
    model = model.to(device).eval()
    model.compute_dtype = cfg.train.precision.dtype  # evaluated, pruned and reported as it was trained
    if torch.device(device).type == "cpu":
        model.use_sparse_weights(sparse_threshold)
    return model, cfg


# -- optimizer state ---------------------------------------------------------------------------

def save_optimizer(path: Path, opt: torch.optim.Optimizer, names: dict[int, str]) -> None:
    state = opt.state_dict()
    tensors = {}
    for idx, s in state["state"].items():
        for key, value in s.items():
            tensors[f"{names[idx]}::{key}"] = torch.as_tensor(value)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": [names[i] for i in g["params"]]}
              for g in state["param_groups"]]
    write_safetensors(path, tensors, metadata={"param_groups": json.dumps(groups)})


def load_optimizer(path: Path, opt: torch.optim.Optimizer, names: dict[int, str]) -> None:
    tensors = read_safetensors(path, "optimizer state")
    groups = json.loads(read_safetensors_metadata(path).get("param_groups", "[]"))
    index = {name: i for i, name in names.items()}
    current = opt.state_dict()
    if [g["params"] for g in groups] != [[names[i] for i in g["params"]] for g in current["param_groups"]]:
        raise UserError(f"{path}: optimizer state does not match this model's parameters; "
                        "the checkpoint belongs to another run")
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        name, field = key.split("::")
        state.setdefault(index[name], {})[field] = value
    for g in groups:
        g["params"] = [index[n] for n in g["params"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


# -- whole checkpoints ---------------------------------------------------------------------------

def checkpoint_dirs(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[5:]))


def save_checkpoint(run_dir: Path, model: GPT, opt: torch.optim.Optimizer, names: dict[int, str],
                    state: dict, keep: int = 2, extra: dict[str, torch.nn.Module] | None = None) -> None:
    """Weights, optimizer and loop state in one directory renamed into place; `extra` modules
    trained with the model (bridges) are saved beside it as NAME.safetensors."""
    step = state["step"]
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".step_*"):  # half-written checkpoints of a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step}.", dir=root))
    save_weights(tmp / "model.safetensors", model, step)
    save_optimizer(tmp / "optimizer.safetensors", opt, names)
    for name, module in (extra or {}).items():
        write_safetensors(tmp / f"{name}.safetensors", module.state_dict())
    write_json(tmp / "state.json", state)
    final = root / f"step_{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(root)
    save_weights(run_dir / "model.safetensors", model, step)
    for name, module in (extra or {}).items():
        write_safetensors(run_dir / f"{name}.safetensors", module.state_dict())
    if keep > 0:
        for old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old)


def load_latest_checkpoint(run_dir: Path, model: GPT, opt: torch.optim.Optimizer,
                           names: dict[int, str], extra: dict[str, torch.nn.Module] | None = None) -> dict | None:
    dirs = checkpoint_dirs(run_dir)
    if not dirs:
        return None
    latest = dirs[-1]
    state = read_json(latest / "state.json", "checkpoint state")
    step = load_weights_into(model, latest / "model.safetensors")
    if step != state.get("step"):
        raise UserError(f"{latest}: weights are from step {step} but state.json says {state.get('step')}; "
                        "delete this checkpoint directory to resume from the previous one")
    for name, module in (extra or {}).items():
        load_module(module, latest / f"{name}.safetensors", name)
    load_optimizer(latest / "optimizer.safetensors", opt, names)
    return state


def load_module(module: torch.nn.Module, path: Path, what: str) -> None:
    """Strict load of a module's tensors from a safetensors file; a mismatch is a one-line error."""
    tensors = read_safetensors(path, what)
    expected = module.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
        raise UserError(f"{path}: {what} do not match this run's shapes; the file belongs to another run")
    module.load_state_dict(tensors, strict=True)


def write_run_config(run_dir: Path, cfg: RunConfig) -> None:
    write_json(run_dir / "config.json", to_dict(cfg))
