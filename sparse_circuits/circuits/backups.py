"""Pruning seeds and backup circuits: is a circuit the model's, or one pruning run's?

- Seed agreement (`prune --seeds N`): the same task pruned with N mask seeds (initialisation and
  batch order; the same pairs); how much their node sets agree (Jaccard index, pairwise) and the
  nodes every seed keeps.
- Backups (`sparse-circuits backups`, after Hao & Goldstein, 2026): prune with several seeds,
  forbid the node their circuits share most, prune again, until no seed reaches the target. The
  rounds that still find a circuit are backups of the ones before; a dense model is said to run out
  after a few rounds, a weight-sparse one to have deep, cheap redundancy over a small core.

[ours] "Most shared": kept by the most seeds' circuits, ties broken by node order (sites in model
order, then channel), so a run is reproducible. The core: the nodes every seed keeps in the first
round. A round's circuits go to OUT/round-R/seed-S/.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Protocol

from ..errors import UserError
from ..fileio import write_json
from ..nodes import NodeId
from .api import DEFAULT_BUDGET, PRUNE_PAIRS, LoadedRun, NoCircuit, prune_task
from .circuit import Circuit
from .prune import PruneConfig

SEEDS_FILE = "seeds.json"
BACKUPS_FILE = "backups.json"


@dataclass
class SeedAgreement:
    seeds: list[int]
    nodes: list[int | None]  # each seed's circuit size (None: no circuit reached the target)
    edges: list[int | None]
    jaccard_mean: float | None  # over pairs of seeds that found a circuit (None: fewer than two did)
    jaccard_min: float | None
    shared: list[str]  # nodes every found circuit keeps
    union: int  # nodes some found circuit keeps


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def seed_agreement(circuits: dict[int, "CircuitLike | None"]) -> SeedAgreement:
    found = [set(c.nodes) for c in circuits.values() if c is not None]
    pairs = [jaccard(a, b) for a, b in itertools.combinations(found, 2)]
    shared = set.intersection(*found) if found else set()
    return SeedAgreement(
        seeds=list(circuits), nodes=[c.num_nodes if c else None for c in circuits.values()],
        edges=[c.num_edges if c else None for c in circuits.values()],
        jaccard_mean=sum(pairs) / len(pairs) if pairs else None, jaccard_min=min(pairs) if pairs else None,
        shared=[str(n) for n in sorted(shared)], union=len(set().union(*found)) if found else 0)


def check_seeds(seeds: int) -> None:
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1 (pruning seeds), got {seeds}")


class CircuitLike(Protocol):
    nodes: list[NodeId]
    num_nodes: int
    num_edges: int


# (mask seed, nodes never to keep, directory to write the circuit to or None) -> a circuit, or None
# when none reaches the target.
PruneOne = Callable[[int, list[NodeId], Path | None], "CircuitLike | None"]


def task_pruner(loaded: LoadedRun, task: str, cfg: PruneConfig, budget: int = DEFAULT_BUDGET,
                n_pairs: int = PRUNE_PAIRS, progress: bool = True) -> PruneOne:
    """`prune` of one task of a run, with the mask seed and the forbidden nodes of each call."""
    def prune_one(seed: int, forbidden: list[NodeId], out: Path | None) -> Circuit | None:
        try:
            return prune_task(loaded, task, out, replace(cfg, seed=seed), budget, n_pairs, progress=progress,
                              forbidden=forbidden)[0]
        except NoCircuit:
            return None
    return prune_one


def prune_seeds(prune_one: PruneOne, seeds: int, out_dir: str | os.PathLike | None = None,
                forbidden: list[NodeId] = ()) -> tuple[dict[int, CircuitLike | None], SeedAgreement]:
    """The task pruned with mask seeds 0..seeds-1 (OUT/seed-S/ each, and OUT/seeds.json)."""
    check_seeds(seeds)
    circuits = {s: prune_one(s, list(forbidden), None if out_dir is None else Path(out_dir) / f"seed-{s}")
                for s in range(seeds)}
    agreement = seed_agreement(circuits)
    if out_dir is not None:
        write_json(Path(out_dir) / SEEDS_FILE, asdict(agreement) | {"forbidden": [str(n) for n in forbidden]})
    return circuits, agreement


@dataclass
class BackupRound:
    round: int
    forbidden: list[str]  # nodes no circuit of this round may keep
    agreement: SeedAgreement
    removed: str | None  # the most shared node, forbidden from the next round on (None: no circuit)


@dataclass
class BackupAnalysis:
    seeds: int
    rounds: list[BackupRound]
    stopped: str  # why the loop ended
    core: list[str]  # nodes every seed keeps in the first round

    @property
    def backups(self) -> int:
        """Rounds after the first that still found a circuit."""
        return max(0, sum(1 for r in self.rounds if r.removed is not None) - 1)

    def as_dict(self) -> dict:
        return asdict(self) | {"backups": self.backups}


def backup_analysis(prune_one: PruneOne, seeds: int = 3, out_dir: str | os.PathLike | None = None,
                    max_rounds: int = 20, log=lambda _: None, about: dict | None = None) -> BackupAnalysis:
    """The exclusion loop; OUT/backups.json (with `about`: task, model) is rewritten after every round."""
    check_seeds(seeds)
    if max_rounds < 1:
        raise UserError(f"backups: --max-rounds must be >= 1, got {max_rounds}")
    forbidden: list[NodeId] = []
    analysis = BackupAnalysis(seeds, [], f"{max_rounds} rounds (--max-rounds) and still a circuit", [])

    def save() -> None:
        if out_dir is not None:
            write_json(Path(out_dir) / BACKUPS_FILE, (about or {}) | analysis.as_dict())

    for r in range(max_rounds):
        out = None if out_dir is None else Path(out_dir) / f"round-{r}"
        circuits, agreement = prune_seeds(prune_one, seeds, out, forbidden)
        counts = Counter(n for c in circuits.values() if c is not None for n in c.nodes)
        removed = min(counts, key=lambda n: (-counts[n], n)) if counts else None
        analysis.rounds.append(BackupRound(r, [str(n) for n in forbidden], agreement,
                                           None if removed is None else str(removed)))
        if r == 0:
            analysis.core = agreement.shared
        found = sum(c is not None for c in circuits.values())
        log(f"round {r}: {found} of {seeds} seeds found a circuit (nodes {agreement.nodes}); "
            + (f"forbidding {removed} (kept by {counts[removed]})" if removed is not None else "stop"))
        save()
        if removed is None:
            analysis.stopped = (f"no seed reaches the target with {len(forbidden)} nodes forbidden" if not found else
                                "a circuit of no nodes reaches the target: nothing left to forbid")
            break
        forbidden.append(removed)
    save()
    return analysis
