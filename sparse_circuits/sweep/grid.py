"""The grid of a sweep: which models to train and how their circuits are found.

A grid is JSON (`sweep --grid FILE`) or one of the named grids below; every key is typed and an
unknown key is an error, like a run config. The models are the product widths x nonzero
fractions (x activation fractions) x seeds, plus `sparse_models` given one by one (x activation
fractions x seeds), plus dense baselines at `dense_widths` x seeds. A
width sets d_model; d_mlp is `mlp_ratio` times it; everything else comes from the preset and
`run_overrides` (a partial run config, e.g. {"train": {"steps": 1000}}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..circuits.api import DEFAULT_BUDGET, MAX_FULL_LOSS, PRUNE_PAIRS
from ..circuits.prune import PruneConfig
from ..config import ModelKind, Preset, RunConfig, dataclass_from_dict, merge_overrides, resolve_run_config, to_dict
from ..errors import UserError
from ..data.meta import DataMeta
from ..fileio import read_json
from ..nodes import NodeLocation
from ..tasks import all_tasks


@dataclass
class PruneSettings:
    """One target and one search for every model (the comparison is only fair that way)."""
    target_loss: float = 0.15
    steps: int = 200
    pairs: int = PRUNE_PAIRS
    budget: int = DEFAULT_BUDGET
    include_controls: bool = False  # the nonsense controls cost a full search each; on by choice
    max_full_loss: float = MAX_FULL_LOSS  # tasks whose whole-model loss is above this are not attempted

    def config(self, target_loss: float | None = None) -> PruneConfig:
        return PruneConfig(steps=self.steps, target_loss=self.target_loss if target_loss is None else target_loss)


@dataclass
class MatchedSettings:
    """The paper's Fig. 2: the sparse models of one (width, nonzero fraction) and the dense model
    nearest each in pretraining loss, pruned at several target losses on their shared tasks."""
    width: int
    nonzero_frac: float
    target_losses: list[float] = field(default_factory=lambda: [0.08, 0.15, 0.3])
    seeds: list[int] = field(default_factory=list)  # empty: the grid's first seed only


@dataclass
class HistorySettings:
    """Circuits across training: one model keeps `checkpoints` evenly spaced checkpoints and
    `task` is pruned at each of them."""
    width: int
    nonzero_frac: float  # 1.0: the dense baseline of that width
    task: str = "single_double_quote"
    checkpoints: int = 5
    seed: int | None = None  # None: the grid's first seed


@dataclass
class SparseSetting:
    """One sparse model outside the product of widths and fractions (e.g. a fixed nonzero count
    spread over several widths: the wide grid)."""
    width: int
    nonzero_frac: float


@dataclass
class GridConfig:
    widths: list[int] = field(default_factory=list)
    nonzero_fracs: list[float] = field(default_factory=list)
    # [ours] Sparse models given one by one, besides the product of widths x nonzero_fracs.
    sparse_models: list[SparseSetting] = field(default_factory=list)
    dense_widths: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    # AbsTopK fraction at every node location; empty: the preset's (1/4). Dense baselines keep the preset's.
    activation_fracs: list[float] = field(default_factory=list)
    preset: Preset = Preset.MICRO
    mlp_ratio: int = 4
    run_overrides: dict = field(default_factory=dict)
    prune: PruneSettings = field(default_factory=PruneSettings)
    # The fixed task set of the geometric mean; empty: the tasks every finished model has a circuit for.
    tasks: list[str] = field(default_factory=list)
    matched: MatchedSettings | None = None
    history: HistorySettings | None = None

    def validate(self) -> "GridConfig":
        if not self.widths and not self.dense_widths and not self.sparse_models:
            raise UserError("grid: no models (give widths and nonzero_fracs, sparse_models, or dense_widths)")
        if self.widths and not self.nonzero_fracs:
            raise UserError("grid: widths needs nonzero_fracs (the sparse models' fractions of nonzero weights)")
        for w in self.widths + self.dense_widths + [m.width for m in self.sparse_models]:
            if w < 1:
                raise UserError(f"grid: width {w} must be >= 1")
        for f in self.nonzero_fracs + [m.nonzero_frac for m in self.sparse_models]:
            if not 0 < f < 1:
                raise UserError(f"grid: nonzero fraction {f} must be in (0, 1); dense models go in dense_widths")
        for a in self.activation_fracs:
            if not 0 < a <= 1:
                raise UserError(f"grid: activation fraction {a} must be in (0, 1]")
        if not self.seeds:
            raise UserError("grid: seeds must list at least one seed")
        seen: dict[str, ModelSpec] = {}
        for spec in self.models():  # every model needs a directory of its own
            if spec.name in seen:
                raise UserError(f"grid: two models would share the directory {spec.name!r} (a value given twice, "
                                "or two that print alike); list each width, fraction and seed once")
            seen[spec.name] = spec
        if self.mlp_ratio < 1:
            raise UserError(f"grid: mlp_ratio must be >= 1, got {self.mlp_ratio}")
        known = {t.name for t in all_tasks()}
        for name in self.tasks:
            if name not in known:
                raise UserError(f"grid: unknown task {name!r} in tasks (see `sparse-circuits tasks list`)")
        self.prune.config()  # impossible prune settings fail here
        if self.matched is not None:
            m = self.matched
            if (m.width, m.nonzero_frac) not in self.sparse_settings():
                raise UserError(f"grid: matched (width {m.width}, nonzero_frac {m.nonzero_frac}) is not a sparse "
                                "model of the grid")
            if not self.dense_widths:
                raise UserError("grid: matched needs dense_widths (the dense models to match)")
            for t in m.target_losses:
                self.prune.config(t)
            for s in m.seeds:
                if s not in self.seeds:
                    raise UserError(f"grid: matched seed {s} is not one of the grid's seeds {self.seeds}")
        if self.history is not None:
            h = self.history
            if h.task not in known:
                raise UserError(f"grid: unknown task {h.task!r} in history")
            if h.checkpoints < 2:
                raise UserError(f"grid: history.checkpoints must be >= 2, got {h.checkpoints}")
            if self.history_spec() not in self.models():
                raise UserError(f"grid: history (width {h.width}, nonzero_frac {h.nonzero_frac}, seed "
                                f"{self.history_spec().seed}) is not a model of the grid")
        return self

    def sparse_settings(self) -> list[tuple[int, float]]:
        """(width, nonzero fraction) of every sparse model: the product, then `sparse_models`; by
        width, denser first (cheap ones first)."""
        pairs = [(w, f) for w in self.widths for f in self.nonzero_fracs]
        pairs += [(m.width, m.nonzero_frac) for m in self.sparse_models]  # a repeat is refused by validate()
        return sorted(pairs, key=lambda p: (p[0], -p[1]))

    def models(self) -> list["ModelSpec"]:
        """Every model, seed by seed (a partly finished sweep has whole seeds first), cheap ones first."""
        acts = self.activation_fracs or [None]
        out = []
        for seed in self.seeds:
            out += [ModelSpec(ModelKind.DENSE, w, 1.0, None, seed) for w in sorted(self.dense_widths)]
            out += [ModelSpec(ModelKind.SPARSE, w, f, a, seed) for w, f in self.sparse_settings() for a in acts]
        return out

    def history_spec(self) -> "ModelSpec | None":
        h = self.history
        if h is None:
            return None
        seed = self.seeds[0] if h.seed is None else h.seed
        if h.nonzero_frac >= 1.0:
            return ModelSpec(ModelKind.DENSE, h.width, 1.0, None, seed)
        acts = self.activation_fracs or [None]
        return ModelSpec(ModelKind.SPARSE, h.width, h.nonzero_frac, acts[0], seed)

    def run_config(self, spec: "ModelSpec", data_dir: str | Path) -> RunConfig:
        grid_part: dict = {"data_dir": str(Path(data_dir)),
                           "model": {"d_model": spec.width, "d_mlp": self.mlp_ratio * spec.width,
                                     "vocab_size": DataMeta.load(data_dir).vocab_size},
                           "sparsity": {"nonzero_frac": spec.nonzero_frac},
                           "train": {"seed": spec.seed}}
        if spec.activation_frac is not None:
            grid_part["model"]["activation_topk"] = {loc.value: spec.activation_frac for loc in NodeLocation}
        if spec == self.history_spec():
            steps = resolve_run_config(self.preset, self.run_overrides, where="grid run_overrides").train.steps
            every = max(1, steps // self.history.checkpoints)
            grid_part["train"] |= {"checkpoint_every": every, "keep_checkpoints": 0}
        return resolve_run_config(self.preset, merge_overrides(self.run_overrides, grid_part),
                                  where=f"grid model {spec.name}")

    def as_dict(self) -> dict:
        return to_dict(self)


@dataclass(frozen=True)
class ModelSpec:
    kind: ModelKind
    width: int
    nonzero_frac: float  # 1.0 for dense
    activation_frac: float | None  # None: the preset's
    seed: int

    @property
    def name(self) -> str:
        act = "" if self.activation_frac is None else f"-act{self.activation_frac:g}"
        frac = "" if self.kind == ModelKind.DENSE else f"-nz{self.nonzero_frac:g}"
        return f"{self.kind.value}-w{self.width}{frac}{act}-s{self.seed}"


def grid_from_dict(data: dict, where: str = "grid") -> GridConfig:
    if not isinstance(data, dict):
        raise UserError(f"{where}: must hold a JSON object (widths, nonzero_fracs, dense_widths, ...)")
    return dataclass_from_dict(GridConfig, data, where).validate()


# [ours] The default grid: the micro shape at two widths and two weight sparsities, dense baselines
# that bracket the sparse models' pretraining losses (width 16 for the sparsest width-64 model, whose
# loss is above the width-32 dense model's), three seeds. ~8 hours on 2 CPU cores (docs/results.md).
# The fixed task set is fixed in advance: the five tasks the sparse and the dense micro models both
# learned on every one of 3 seeds in the capability study (issue 10, docs/results.md). Left to the
# shared-set rule, one weak model (the width-16 dense one does 2 tasks) would shrink every model's
# mean to those 2 tasks; with a fixed set it gets no mean and its missing tasks are listed.
DEFAULT_GRID = {
    "widths": [64, 128], "nonzero_fracs": [0.25, 0.0625], "dense_widths": [16, 32, 64, 128], "seeds": [0, 1, 2],
    "tasks": ["single_double_quote", "for_while", "indent_for", "var_if", "while_return_true"],
    "matched": {"width": 128, "nonzero_frac": 0.0625, "target_losses": [0.08, 0.15, 0.3]},
    "history": {"width": 128, "nonzero_frac": 0.0625, "task": "single_double_quote", "checkpoints": 5},
}
# Seconds on 2 cores, for trying the command: tiny models that learn little, a loose target.
QUICK_GRID = {
    "preset": "tiny", "widths": [16, 32], "nonzero_fracs": [0.5, 0.25], "dense_widths": [16], "seeds": [0],
    "run_overrides": {"train": {"steps": 40, "batch_size": 8, "eval_every": 20, "checkpoint_every": 20,
                                "log_every": 10}},
    "prune": {"target_loss": 0.6, "steps": 30, "pairs": 16, "max_full_loss": 1.0},
    "matched": {"width": 32, "nonzero_frac": 0.25, "target_losses": [0.5, 0.6]},
    "history": {"width": 32, "nonzero_frac": 0.25, "task": "else_elif", "checkpoints": 2},
}
# [ours] The wide grid (issue 29; the paper's Fig. 3: wider at a fixed number of nonzero weights):
# the default grid's width-128 1/16 model (62k nonzero weights), then widths 256 and 512 at 1/64 and
# 1/256 of the weights, and width 256 at 1/16; the same data, schedule, prune settings and task set
# as the default grid, and the dense baselines that bracket the sparse models' losses there (the
# default grid's dense w32-w128: 3.80-3.51 nats/token). Nonzero counts are not exactly equal across
# widths (embeddings grow with width, hidden matrices with its square, and min_per_unit keeps at
# least 4 weights per unit); each model's own count is in the table. Width 512 takes ~1 s a step on
# 2 cores (4096 tokens): the whole grid is ~10 h there (docs/results.md).
WIDE_GRID = {
    "widths": [128], "nonzero_fracs": [0.0625],
    "sparse_models": [{"width": 256, "nonzero_frac": 0.0625}, {"width": 256, "nonzero_frac": 0.015625},
                      {"width": 512, "nonzero_frac": 0.00390625}],
    "dense_widths": [32, 64, 128], "seeds": [0, 1, 2],
    "tasks": DEFAULT_GRID["tasks"],
    # Sparse products for layers under 1% nonzero (the width-512 model's): 1.13x a step there, and a
    # loss elsewhere (benchmarks/results/sparse_training.json).
    "run_overrides": {"train": {"sparse_products_below": 0.01}},
}
NAMED_GRIDS = {"default": DEFAULT_GRID, "quick": QUICK_GRID, "wide": WIDE_GRID}


def load_grid(spec: str) -> GridConfig:
    """A named grid ('default', 'quick', 'wide') or a JSON file."""
    if spec in NAMED_GRIDS:
        return grid_from_dict(NAMED_GRIDS[spec], f"grid {spec!r}")
    return grid_from_dict(read_json(spec, "grid file"), spec)
