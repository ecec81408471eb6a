"""The on-disk formats of a model's weights and an optimizer's state (where they lie in a run
directory is `runs.py`'s). Every safetensors file carries a digest of its tensors
(fileio.CONTENT_DIGEST), checked on load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .config import ModelConfig, Positions, to_dict
from .errors import UserError
from .fileio import read_safetensors, read_safetensors_metadata, write_safetensors
from .model import GPT

MODEL_FORMAT = "sparse-circuits-model"
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


def load_module(module: torch.nn.Module, path: Path, what: str) -> None:
    """Strict load of a module's tensors from a safetensors file; a mismatch is a one-line error."""
    tensors = read_safetensors(path, what)
    expected = module.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
        raise UserError(f"{path}: {what} do not match this run's shapes; the file belongs to another run")
    module.load_state_dict(tensors, strict=True)
