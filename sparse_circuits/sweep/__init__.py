"""Sweeps: a grid of sparse and dense models, their circuits, and the capability-interpretability frontier."""

from .frontier import Frontier, load_frontier, matched_ratios, ratio_spread
from .grid import DEFAULT_GRID, QUICK_GRID, GridConfig, ModelKind, ModelSpec, grid_from_dict, load_grid
from .run import Shard, run_sweep
from .table import ModelRow, SweepTable, geomean_over, task_set

__all__ = ["DEFAULT_GRID", "QUICK_GRID", "Frontier", "GridConfig", "ModelKind", "ModelRow", "ModelSpec", "Shard",
           "SweepTable", "geomean_over", "grid_from_dict", "load_frontier", "load_grid", "matched_ratios",
           "ratio_spread", "run_sweep", "task_set"]
