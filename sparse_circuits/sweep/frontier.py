"""The frontier of a finished (or partly finished) sweep: what `sparse-circuits frontier DIR` computes.

- Fig. 3 data: each model's held-out loss and geometric mean of edges over the sweep's fixed task set.
- The dense/sparse ratio at matched pretraining loss: for every sparse model, the dense models'
  geometric mean interpolated to its loss, log-linearly between the two dense models that bracket
  it (the same seed's dense models when there are two or more, else all of them). Outside the
  dense models' range there is no ratio ([ours]: no extrapolation); that is reported.
- The ratio per sparse setting: mean, spread (sample standard deviation) and range over seeds.
- Fig. 2 data (matched.json) and the circuits across training (history/) as the sweep left them.
- Fixed-nonzero series (the paper's Fig. 3 as width goes up): sparse settings with about the same
  number of nonzero weights at different widths, with loss, edges and ratio per width.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from ..circuits.history import CIRCUIT_HISTORY_FILE, CircuitHistory
from ..circuits.summary import geomean_edges
from ..fileio import write_json
from .grid import ModelKind
from .run import HISTORY_DIR, MatchedPair, load_matched
from .table import ModelRow, SweepTable

FRONTIER_DIR = "frontier"
FRONTIER_FILE = "frontier.json"


def interpolate_log(points: list[tuple[float, float]], x: float) -> tuple[float, int, int] | None:
    """log(y) interpolated linearly in x between the two points that bracket x: (y, i, j) with i, j
    the bracketing points' indices in `points`, or None when x is outside their range."""
    order = sorted(range(len(points)), key=lambda k: points[k][0])
    for i, j in zip(order, order[1:]):
        (x0, y0), (x1, y1) = points[i], points[j]
        if x0 <= x <= x1:
            t = 0.0 if x1 == x0 else (x - x0) / (x1 - x0)
            return math.exp((1 - t) * math.log(y0) + t * math.log(y1)), i, j
    if len(points) == 1 and points[0][0] == x:
        return points[0][1], order[0], order[0]
    return None


@dataclass
class MatchedRatio:
    sparse: str
    width: int
    nonzero_frac: float
    activation_frac: float | None
    seed: int
    val_loss: float
    sparse_geomean: float | None
    dense_geomean: float | None  # interpolated at val_loss
    between: list[str]  # the bracketing dense models
    ratio: float | None  # dense / sparse
    note: str | None = None  # why there is no ratio


@dataclass
class RatioSpread:
    width: int
    nonzero_frac: float
    activation_frac: float | None
    n: int  # seeds with a ratio
    mean: float | None
    std: float | None  # sample standard deviation over seeds (None for one seed)
    low: float | None
    high: float | None
    without_ratio: int  # seeds whose model has no ratio (see MatchedRatio.note)


def matched_ratios(table: SweepTable) -> list[MatchedRatio]:
    dense = [(r, table.geomean(r)) for r in table.rows if r.kind == ModelKind.DENSE]
    dense = [(r, g) for r, g in dense if g is not None]
    dense_without = [(r, missing) for r, missing in table.without_mean() if r.kind == ModelKind.DENSE]
    out = []
    for r in table.rows:
        if r.kind != ModelKind.SPARSE:
            continue
        gm = table.geomean(r)
        same = [(d, g) for d, g in dense if d.seed == r.seed]
        curve = same if len(same) >= 2 else dense
        base = MatchedRatio(r.name, r.width, r.nonzero_frac, r.activation_frac, r.seed, r.val_loss, gm, None, [], None)
        if gm is None:
            base.note = "no geometric mean over the task set (missing tasks)"
        elif len(curve) < 2:
            base.note = "fewer than two dense models with a geometric mean over the task set"
        else:
            hit = interpolate_log([(d.val_loss, g) for d, g in curve], r.val_loss)
            if hit is None:
                lo, hi = min(d.val_loss for d, _ in curve), max(d.val_loss for d, _ in curve)
                base.note = f"loss {r.val_loss:.3f} outside the dense models' {lo:.3f}-{hi:.3f} (not extrapolated)"
                # A dense model that would bracket the loss but lacks tasks of the set says something too.
                near = [f"{d.name} ({d.val_loss:.3f}, missing {', '.join(m)})" for d, m in dense_without
                        if (d.seed == r.seed or curve is dense) and not lo <= d.val_loss <= hi
                        and (d.val_loss > hi) == (r.val_loss > hi)]
                if near:
                    base.note += "; dense models there have no mean over the task set: " + "; ".join(near)
            else:
                value, i, j = hit
                base.dense_geomean, base.between = value, [curve[i][0].name, curve[j][0].name]
                base.ratio = value / gm
        out.append(base)
    return out


def ratio_spread(ratios: list[MatchedRatio]) -> list[RatioSpread]:
    groups: dict[tuple, list[MatchedRatio]] = {}
    for r in ratios:
        groups.setdefault((r.width, r.nonzero_frac, r.activation_frac), []).append(r)
    out = []
    for (w, f, a), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        vals = [r.ratio for r in rs if r.ratio is not None]
        out.append(RatioSpread(w, f, a, len(vals), statistics.fmean(vals) if vals else None,
                               statistics.stdev(vals) if len(vals) > 1 else None,
                               min(vals, default=None), max(vals, default=None), len(rs) - len(vals)))
    return out


# [ours] Sparse settings whose mean nonzero counts lie within this factor of the smallest one of a
# series count as "the same number of nonzero weights": exact equality is impossible across widths
# (embeddings grow with the width, hidden matrices with its square, min_per_unit floors each unit).
NONZERO_SERIES_FACTOR = 1.6


@dataclass
class WidthPoint:
    """One sparse setting of a fixed-nonzero series, over its seeds."""
    width: int
    nonzero_frac: float
    activation_frac: float | None
    seeds: int
    nonzero_params: float  # mean over seeds
    loss_mean: float
    loss_std: float | None
    geomean: float | None  # geometric mean over seeds of each seed's geometric mean; None if a seed has none
    geomean_low: float | None
    geomean_high: float | None
    ratio: RatioSpread | None  # dense / sparse at matched loss


@dataclass
class NonzeroSeries:
    nonzero_params: float  # the smallest setting's mean count
    points: list[WidthPoint]  # by width
    within: float = NONZERO_SERIES_FACTOR  # every setting's count is at most this times nonzero_params


def fixed_nonzero_series(table: SweepTable, spread: list[RatioSpread]) -> list[NonzeroSeries]:
    """Sparse settings grouped by nonzero count (NONZERO_SERIES_FACTOR); only groups that span two or
    more widths are series."""
    groups: dict[tuple, list[ModelRow]] = {}
    for r in table.rows:
        if r.kind == ModelKind.SPARSE:
            groups.setdefault((r.width, r.nonzero_frac, r.activation_frac), []).append(r)
    points = []
    for (w, f, a), rs in groups.items():
        gms = [table.geomean(r) for r in rs]
        have = all(g is not None for g in gms)
        ratio = next((s for s in spread if (s.width, s.nonzero_frac, s.activation_frac) == (w, f, a)), None)
        points.append(WidthPoint(
            w, f, a, len(rs), statistics.fmean(r.nonzero_params for r in rs), statistics.fmean(r.val_loss for r in rs),
            statistics.stdev(r.val_loss for r in rs) if len(rs) > 1 else None,
            math.exp(statistics.fmean(math.log(g) for g in gms)) if have else None,
            min(gms) if have else None, max(gms) if have else None, ratio))
    points.sort(key=lambda p: p.nonzero_params)
    series: list[list[WidthPoint]] = []
    for p in points:
        if series and p.nonzero_params <= NONZERO_SERIES_FACTOR * series[-1][0].nonzero_params:
            series[-1].append(p)
        else:
            series.append([p])
    return [NonzeroSeries(s[0].nonzero_params, sorted(s, key=lambda p: (p.width, -p.nonzero_frac)))
            for s in series if len({p.width for p in s}) >= 2]


@dataclass
class TargetRatio:
    """Fig. 2 in one number per target: dense over sparse geometric mean of edges, over the tasks both
    models of a matched pair have a circuit for at that target."""
    seed: int
    target_loss: float
    tasks: list[str]
    ratio: float | None


def target_ratios(pairs: list[MatchedPair]) -> list[TargetRatio]:
    out = []
    for p in pairs:
        for target in sorted({q.target_loss for q in p.points}):
            edges = {(q.model, q.task): q.edges for q in p.points if q.target_loss == target and q.edges is not None}
            tasks = [t for t in p.tasks if (p.sparse, t) in edges and (p.dense, t) in edges]
            ratio = (geomean_edges([edges[p.dense, t] for t in tasks]) / geomean_edges([edges[p.sparse, t] for t in tasks])
                     if tasks else None)
            out.append(TargetRatio(p.seed, target, tasks, ratio))
    return out


@dataclass
class Frontier:
    table: SweepTable
    ratios: list[MatchedRatio]
    spread: list[RatioSpread]
    matched: list[MatchedPair]
    histories: list[CircuitHistory]

    @property
    def target_ratios(self) -> list[TargetRatio]:
        return target_ratios(self.matched)

    @property
    def series(self) -> list[NonzeroSeries]:
        return fixed_nonzero_series(self.table, self.spread)

    def as_dict(self) -> dict:
        return {"task_set": asdict(self.table.task_set),
                "models": [{"name": r.name, "kind": r.kind.value, "width": r.width, "nonzero_frac": r.nonzero_frac,
                            "activation_frac": r.activation_frac, "seed": r.seed, "val_loss": r.val_loss,
                            "geomean_edges": self.table.geomean(r), "tasks_learned": len(r.tasks_learned)}
                           for r in self.table.rows],
                "matched_ratios": [asdict(r) for r in self.ratios], "ratio_spread": [asdict(s) for s in self.spread],
                "matched_pairs": [asdict(p) for p in self.matched],
                "matched_target_ratios": [asdict(r) for r in self.target_ratios],
                "fixed_nonzero_series": [asdict(s) for s in self.series],
                "histories": [h.as_dict() for h in self.histories]}


def load_frontier(sweep_dir: str | os.PathLike) -> Frontier:
    sweep_dir = Path(sweep_dir)
    table = SweepTable.load(sweep_dir)
    ratios = matched_ratios(table)
    histories = [CircuitHistory.load(p) for p in sorted((sweep_dir / HISTORY_DIR).glob(f"*/{CIRCUIT_HISTORY_FILE}"))]
    return Frontier(table, ratios, ratio_spread(ratios), load_matched(sweep_dir), histories)


def seed_means(rows: list[ModelRow], table: SweepTable) -> list[tuple[ModelRow, float, float]]:
    """(a representative row, mean loss, geometric mean of the geometric means) per setting over seeds,
    for settings where every seed's model has a geometric mean."""
    groups: dict[tuple, list[ModelRow]] = {}
    for r in rows:
        groups.setdefault((r.kind, r.width, r.nonzero_frac, r.activation_frac), []).append(r)
    out = []
    for rs in groups.values():
        gms = [table.geomean(r) for r in rs]
        if all(g is not None for g in gms):
            out.append((rs[0], statistics.fmean(r.val_loss for r in rs),
                        math.exp(statistics.fmean(math.log(g) for g in gms))))
    return out


def write_frontier_json(frontier: Frontier, out_dir: str | os.PathLike) -> None:
    write_json(Path(out_dir) / FRONTIER_FILE, frontier.as_dict())
