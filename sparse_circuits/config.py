"""Typed, validated configuration.

Every option is a dataclass field; free-form choices are enums. `from_dict` rejects unknown keys
and bad enum values with a message that lists what is allowed, so a typo can never silently
fall back to a default (SPEC section 12). `to_dict` gives the resolved config that is saved next
to every artifact.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from .errors import UserError
from .nodes import NodeLocation  # noqa: F401 (config keys name node locations)


class BigramTable(str, enum.Enum):
    NONE = "none"
    FIXED = "fixed"  # [ours] buffer of corpus bigram log-probabilities
    LEARNABLE = "learnable"  # same initial values, trained


class Positions(str, enum.Enum):
    """How a token's position reaches the model."""

    NONE = "none"  # the paper's default: attention has to infer positions (e.g. from the sink)
    LEARNED = "learned"  # a learned table added to the token embedding (GPT-2), weight-sparsified like it
    # [ours, after the paper's earlier models] a learned (context x d_pos) table, RMS-normed per read,
    # concatenated to every attention and MLP input as read-only channels: blocks read them through
    # extra columns of c_q/c_k/c_v/c_fc, nothing writes them, and neither the weight projection nor
    # AbsTopK touches the table. They are not nodes (like the bigram table, always present).
    CONCAT = "concat"


class AnnealSchedule(str, enum.Enum):
    LINEAR = "linear"  # nonzero fraction falls linearly from 1 to the target (paper)
    EXPONENTIAL = "exponential"  # geometric interpolation: log-fraction falls linearly


class UnitAxis(str, enum.Enum):
    """Which slices of a weight matrix are the 'units' that keep at least j nonzeros."""

    OUTPUT = "output"  # rows of an (out, in) weight / vocabulary rows of an embedding
    INPUT = "input"  # columns


class LossReduction(str, enum.Enum):
    """How the per-token losses are combined before backward (the logged loss is always the mean).

    [ours] SUM makes gradients O(1), the scale at which the paper's AdamW eps of 0.1 and its
    gradient-RMS clip of 1 act as described; with MEAN the gradients of a micro model are ~1e-4,
    eps dominates every update and AdamW degenerates into slow SGD.
    """

    SUM = "sum"
    MEAN = "mean"


class Precision(str, enum.Enum):
    """The dtype of the matrix products (autocast); weights, optimizer state, the weight projection,
    norms, the residual stream, the loss's log-softmax and checkpoints stay float32 in both."""

    FP32 = "fp32"
    BF16 = "bf16"  # bfloat16 products: GPUs' matrix units; CPUs with bf16 instructions (measure first)

    @property
    def dtype(self) -> "torch.dtype | None":
        import torch

        return torch.bfloat16 if self == Precision.BF16 else None


class ModelKind(str, enum.Enum):
    """Weight-sparse or dense. A dense model is the same config with sparsity.nonzero_frac 1 (SPEC 3)."""
    SPARSE = "sparse"
    DENSE = "dense"


class Preset(str, enum.Enum):
    TINY = "tiny"
    MICRO = "micro"
    SMALL = "small"
    PAPER = "paper"


ALL_LOCATIONS_QUARTER = {loc: 0.25 for loc in NodeLocation}


@dataclass
class ModelConfig:
    n_layer: int = 2
    d_model: int = 128
    d_head: int = 16
    d_mlp: int = 512
    context: int = 128
    vocab_size: int = 2048
    attention_sink: bool = True
    bigram_table: BigramTable = BigramTable.FIXED
    positions: Positions = Positions.NONE
    d_pos: int = 16  # width of the concatenated position channels (positions = concat)
    # AbsTopK fraction per node location; locations not listed are not sparsified.
    activation_topk: dict[NodeLocation, float] = field(default_factory=lambda: dict(ALL_LOCATIONS_QUARTER))
    init_std: float = 0.02
    # RMSNorm epsilon; null: the machine epsilon of the activations' dtype (torch.nn.RMSNorm's
    # default, which OpenAI's released models use; ~1.2e-7 in float32).
    norm_eps: float | None = 1e-5
    # With positions 'concat': whether the position channels pass through the attention and MLP
    # input sites with the block input (AbsTopK then selects over [x, positions] and they become
    # nodes), as in OpenAI's released models, instead of joining after the site as read-only inputs.
    positions_at_input_site: bool = False

    @property
    def n_head(self) -> int:
        return self.d_model // self.d_head

    def validate(self) -> None:
        for name in ("n_layer", "d_model", "d_head", "d_mlp", "context", "vocab_size"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        # [ours] Sane bounds, checked before anything is built: an edited config.json with n_layer 1e9
        # would otherwise build modules until memory runs out. The paper's largest models are far inside.
        for name, bound in MODEL_BOUNDS.items():
            if getattr(self, name) > bound:
                raise UserError(f"model.{name} {getattr(self, name)} is beyond {bound}; the config is damaged or "
                                "not a model this tool can build")
        if self.d_model % self.d_head:
            raise UserError(f"model.d_model ({self.d_model}) must be a multiple of model.d_head ({self.d_head})")
        if self.positions == Positions.CONCAT and self.d_pos < 1:
            raise UserError(f"model.d_pos must be >= 1 with positions 'concat', got {self.d_pos}")
        if self.vocab_size > 65535:
            raise UserError(f"model.vocab_size {self.vocab_size} does not fit the uint16 token arrays (max 65535)")
        for loc, frac in self.activation_topk.items():
            if not 0.0 < frac <= 1.0:
                raise UserError(f"model.activation_topk[{loc.value}] must be in (0, 1], got {frac}")
        if self.norm_eps is not None and not (math.isfinite(self.norm_eps) and self.norm_eps > 0):
            raise UserError(f"model.norm_eps must be a positive number or null, got {self.norm_eps}")
        if self.positions_at_input_site and self.positions != Positions.CONCAT:
            raise UserError("model.positions_at_input_site needs positions 'concat'; set it to false")


MODEL_BOUNDS = {"n_layer": 1024, "d_model": 1 << 16, "d_head": 1 << 16, "d_mlp": 1 << 18, "context": 1 << 17,
                "d_pos": 1 << 16}


@dataclass
class SparsityConfig:
    nonzero_frac: float = 1 / 16  # target fraction of nonzero entries in every sparsified tensor
    anneal: AnnealSchedule = AnnealSchedule.LINEAR
    anneal_end: float = 0.5  # fraction of training over which the nonzero fraction reaches the target
    min_per_unit: int = 4  # j: never leave a unit with fewer nonzero weights than this
    unit_axis: UnitAxis = UnitAxis.OUTPUT

    @property
    def kind(self) -> ModelKind:
        return ModelKind.DENSE if self.nonzero_frac >= 1.0 else ModelKind.SPARSE

    def validate(self) -> None:
        if not 0.0 < self.nonzero_frac <= 1.0:
            raise UserError(f"sparsity.nonzero_frac must be in (0, 1], got {self.nonzero_frac}")
        if not 0.0 <= self.anneal_end <= 1.0:
            raise UserError(f"sparsity.anneal_end must be in [0, 1], got {self.anneal_end}")
        if self.min_per_unit < 0:
            raise UserError(f"sparsity.min_per_unit must be >= 0, got {self.min_per_unit}")


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32  # sequences per optimizer step, summed over all processes
    lr: float = 3e-3  # base learning rate before the sharkfin factors
    warmup_frac: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    eps: float = 0.1  # large on purpose (paper)
    grad_clip_rms: float = 1.0  # clip the root-mean-square of the whole gradient to this
    loss_reduction: LossReduction = LossReduction.SUM
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 100
    keep_checkpoints: int = 2  # newest checkpoints kept on disk (0 keeps all)
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    device: str = "cpu"
    # [ours] fp32 on CPUs: on the 2-core reference machine bf16 products were slower, not faster
    # (docs/results.md, issue 26); the GPU presets use bf16.
    precision: Precision = Precision.FP32
    # [ours] Sparse-aware steps: a linear layer whose weight has a nonzero fraction below this runs its
    # forward product and its product back to the input on the nonzeros (kernels.training_sparse_linear;
    # the weight's gradient stays dense). 0 turns it off, the default: on the 2-core reference CPU it
    # did not win at the densities the presets train (benchmarks/bench_sparse_training.py).
    sparse_products_below: float = 0.0

    def validate(self) -> None:
        if not 0.0 <= self.sparse_products_below <= 1.0:
            raise UserError(f"train.sparse_products_below must be in [0, 1] (0: off), got {self.sparse_products_below}")
        for name in ("steps", "batch_size", "log_every", "eval_every", "eval_batches", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "warmup_frac", "beta1", "beta2", "weight_decay", "eps", "grad_clip_rms"):
            if not math.isfinite(getattr(self, name)):
                raise UserError(f"train.{name} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"train.lr must be > 0, got {self.lr}")
        if self.threads < 0:
            raise UserError(f"train.threads must be >= 0 (0: torch's default), got {self.threads}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise UserError(f"train.device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise UserError(f"train.warmup_frac must be in [0, 1), got {self.warmup_frac}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: Preset = Preset.MICRO
    data_dir: str = ""

    def validate(self) -> "RunConfig":
        self.model.validate()
        self.sparsity.validate()
        self.train.validate()
        return self


PRESETS: dict[Preset, dict[str, Any]] = {
    # Tests only: seconds per run.
    Preset.TINY: {
        "model": {"n_layer": 2, "d_model": 32, "d_head": 16, "d_mlp": 128, "context": 64},
        "sparsity": {"nonzero_frac": 0.25},
        "train": {"steps": 50, "batch_size": 8, "eval_every": 25, "checkpoint_every": 25, "log_every": 5},
    },
    # The embedded default: a real model in ~10-15 minutes on 2 CPU cores (docs/results.md).
    # [ours] Concatenated read-only positions: the capability study's best option at this size
    # (more tasks and lower real-code loss than none or learned-added, docs/results.md).
    Preset.MICRO: {
        "model": {"n_layer": 2, "d_model": 128, "d_head": 16, "d_mlp": 512, "context": 128, "positions": "concat"},
        "sparsity": {"nonzero_frac": 1 / 16},
        "train": {"steps": 2000, "batch_size": 32, "lr": 3e-3},
    },
    # One GPU.
    Preset.SMALL: {
        "model": {"n_layer": 8, "d_model": 512, "d_head": 16, "d_mlp": 2048, "context": 256},
        "sparsity": {"nonzero_frac": 1 / 64},
        "train": {"steps": 20000, "batch_size": 64, "lr": 1e-3, "device": "cuda", "eval_every": 500,
                  "checkpoint_every": 1000, "precision": "bf16"},
    },
    # The paper's shape; many GPUs through torchrun.
    Preset.PAPER: {
        "model": {"n_layer": 8, "d_model": 2048, "d_head": 16, "d_mlp": 8192, "context": 256},
        "sparsity": {"nonzero_frac": 1 / 1000, "anneal_end": 0.8},
        "train": {"steps": 100000, "batch_size": 256, "lr": 1e-3, "device": "cuda", "eval_every": 1000,
                  "checkpoint_every": 2000, "precision": "bf16"},
    },
}


def _convert(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):  # `X | None`
        (inner,) = [t for t in typing.get_args(typ) if t is not type(None)]
        return None if value is None else _convert(value, inner, where)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected an object, got {type(value).__name__}")
        return _from_dict(typ, value, where)
    if isinstance(typ, type) and issubclass(typ, enum.Enum):
        try:
            return typ(value)
        except ValueError:
            allowed = ", ".join(m.value for m in typ)
            raise UserError(f"{where}: unknown value {value!r} (allowed: {allowed})") from None
    if typ is dict:  # a partial config laid over another one; checked where it is resolved
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected an object, got {type(value).__name__}")
        return value
    if origin is list:
        (item_type,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, value_type = typing.get_args(typ)
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected an object, got {type(value).__name__}")
        return {_convert(k, key_type, f"{where} key") : _convert(v, value_type, f"{where}[{k}]")
                for k, v in value.items()}
    if typ is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {typ} at {where}")


def _from_dict(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    return cls(**{k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def dataclass_from_dict(cls: type, data: dict, where: str) -> Any:
    """Any typed config dataclass from JSON data, with the same strict checks as RunConfig."""
    return _from_dict(cls, data, where)


def merge_overrides(base: dict, override: dict) -> dict:
    """`base` (a config dict) with a partial config dict laid over it, section by section."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "activation_topk":
            out[k] = merge_overrides(out[k], v)
        else:
            out[k] = v
    return out


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {to_dict(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def run_config_from_dict(data: dict, where: str = "config") -> RunConfig:
    if not isinstance(data, dict):
        raise UserError(f"{where}: must hold a JSON object (model, sparsity, train, ...), not {type(data).__name__}")
    model = data.get("model")
    if isinstance(model, dict) and "learned_positions" in model:
        # Run directories written before `positions` existed said `learned_positions: true/false`.
        model = dict(model)
        legacy = model.pop("learned_positions")
        if "positions" in model:
            raise UserError(f"{where}.model: give `positions`, not also the old `learned_positions`")
        model["positions"] = Positions.LEARNED.value if legacy is True else Positions.NONE.value
        data = {**data, "model": model}
    return _from_dict(RunConfig, data, where).validate()


def resolve_run_config(preset: str | Preset, overrides: dict | None = None, where: str = "config") -> RunConfig:
    """Preset values, then user overrides (a partial RunConfig dict), validated."""
    preset = _convert(preset, Preset, "preset")
    merged = merge_overrides(PRESETS[preset], overrides or {})
    merged["preset"] = preset.value
    return run_config_from_dict(merged, where)
