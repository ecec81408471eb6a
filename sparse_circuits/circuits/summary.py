"""What `prune-all` found for each task of one model, and the geometric mean of circuit sizes.

RUN_DIR/circuits/summary.json holds a `PruneAllSummary`: the settings, one `TaskOutcome` per
task, and the derived numbers (geometric mean of edges and the tasks it is taken over).
"""

from __future__ import annotations

import enum
import math
import os
from dataclasses import asdict, dataclass, fields

from ..errors import UserError
from ..fileio import read_json, write_json
from .prune import PruneConfig

# A task whose test split the corpus bigram table alone gets this right (prediction from the last
# token only) is decided by the model's bigram table, not by a circuit: it is marked and kept out
# of the geometric mean (issue 10; else_elif is the example, docs/results.md).
BIGRAM_DECIDED = 0.8
SUMMARY_FILE = "summary.json"


class TaskStatus(str, enum.Enum):
    CIRCUIT = "circuit"  # pruned to the target and validated
    NO_CIRCUIT = "no-circuit"  # attempted; no circuit reached the target
    NOT_ATTEMPTED = "not-attempted"  # the whole model's task loss is above prune-all's limit
    NOT_LEARNED = "not-learned"  # the whole model's test accuracy is below prune-all's min_accuracy
    NOT_EXPRESSIBLE = "not-expressible"  # the run's tokenizer cannot express the task's pairs


@dataclass
class TaskOutcome:
    status: TaskStatus
    control: bool
    full_model_loss: float | None  # the whole model's task loss on the pruning pairs (None: not expressible)
    num_nodes: int | None = None
    num_edges: int | None = None
    loss: float | None = None  # the circuit's task loss on the pruning pairs
    loss_calibrated: float | None = None
    test_loss: float | None = None  # sufficiency on the held-out test split
    necessity_loss: float | None = None
    random_loss: float | None = None
    role_drift_mean: float | None = None
    seconds: float | None = None
    error: str | None = None  # why there is no circuit
    test_accuracy: float | None = None  # the whole model's, from its task scores
    bigram_accuracy: float | None = None
    bigram_decided: bool = False
    from_file: bool = False  # a task from data (--task-file): shown, but not one of the suite's tasks

    @property
    def has_circuit(self) -> bool:
        return self.status == TaskStatus.CIRCUIT

    @property
    def counted(self) -> bool:
        """In the geometric mean: a circuit of a suite task that the bigram table does not decide."""
        return self.has_circuit and not self.control and not self.bigram_decided and not self.from_file

    def as_dict(self) -> dict:
        return asdict(self) | {"status": self.status.value}

    @classmethod
    def from_dict(cls, d: dict) -> "TaskOutcome":
        d = dict(d)
        if "status" not in d:  # summaries written before the status existed
            d["status"] = (TaskStatus.CIRCUIT if d.get("num_nodes") is not None else
                           TaskStatus.NOT_ATTEMPTED if "not attempted" in (d.get("error") or "") else
                           TaskStatus.NO_CIRCUIT)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names} | {"status": TaskStatus(d["status"])})


def bigram_decided(bigram_accuracy: float | None) -> bool:
    return bigram_accuracy is not None and bigram_accuracy >= BIGRAM_DECIDED


def geomean_edges(edge_counts: list[int]) -> float | None:
    """Geometric mean of edge counts; a 0-edge circuit counts as 1."""
    return math.exp(sum(math.log(max(e, 1)) for e in edge_counts) / len(edge_counts)) if edge_counts else None


@dataclass
class PruneAllSummary:
    model: str
    weights_sha256: str
    config: PruneConfig
    budget: int
    pairs: int
    max_full_loss: float
    tasks: dict[str, TaskOutcome]
    min_accuracy: float | None = None  # tasks below this test accuracy were not attempted (None: no such limit)

    @property
    def geomean_tasks(self) -> list[str]:
        return [n for n, r in self.tasks.items() if r.counted]

    @property
    def geomean_edges(self) -> float | None:
        return geomean_edges([self.tasks[n].num_edges for n in self.geomean_tasks])

    @property
    def bigram_decided_tasks(self) -> list[str]:
        return [n for n, r in self.tasks.items() if r.has_circuit and not r.control and r.bigram_decided]

    @property
    def tasks_with_circuit(self) -> int:
        return sum(1 for r in self.tasks.values() if r.has_circuit and not r.control)

    def settings(self) -> dict:
        """What must match for an earlier summary's circuits to be reused."""
        return {"weights_sha256": self.weights_sha256, "prune_config": self.config.as_dict(),
                "budget": self.budget, "pairs": self.pairs, "max_full_loss": self.max_full_loss,
                "min_accuracy": self.min_accuracy}

    def as_dict(self) -> dict:
        return {"model": self.model, "weights_sha256": self.weights_sha256, "target_loss": self.config.target_loss,
                "ablation": self.config.ablation.value, "budget": self.budget, "pairs": self.pairs,
                "max_full_loss": self.max_full_loss, "min_accuracy": self.min_accuracy,
                "prune_config": self.config.as_dict(),
                "tasks": {n: r.as_dict() for n, r in self.tasks.items()},
                "geomean_edges": self.geomean_edges, "geomean_tasks": self.geomean_tasks,
                "bigram_decided": self.bigram_decided_tasks, "tasks_with_circuit": self.tasks_with_circuit}

    def save(self, out_root: str | os.PathLike) -> None:
        write_json(os.path.join(out_root, SUMMARY_FILE), self.as_dict())

    @classmethod
    def load(cls, out_root: str | os.PathLike) -> "PruneAllSummary":
        path = os.path.join(out_root, SUMMARY_FILE)
        d = read_json(path, "prune-all summary")
        try:
            return cls(model=d["model"], weights_sha256=d["weights_sha256"],
                       config=PruneConfig.from_dict(d["prune_config"], f"{path} prune_config"),
                       budget=d["budget"], pairs=d["pairs"], max_full_loss=d["max_full_loss"],
                       tasks={n: TaskOutcome.from_dict(r) for n, r in d["tasks"].items()},
                       min_accuracy=d.get("min_accuracy"))  # absent in summaries written before it existed
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: damaged prune-all summary ({type(e).__name__}: {e}); "
                            "run `sparse-circuits prune-all` again") from None


@dataclass
class SharedGeomean:
    tasks: list[str]  # tasks every model has a counted circuit for
    geomean_edges: dict[str, float | None]  # model name -> geometric mean over `tasks`


def shared_geomean(summaries: dict[str, PruneAllSummary]) -> SharedGeomean:
    """Geometric mean of edges of each model's circuits over the same tasks: those every model has a
    circuit for, leaving out controls and bigram-decided tasks. `summaries`: model name -> summary."""
    first = next(iter(summaries.values())).tasks
    tasks = [t for t in first if all(t in s.tasks and s.tasks[t].counted for s in summaries.values())]
    return SharedGeomean(tasks, {n: geomean_edges([s.tasks[t].num_edges for t in tasks]) for n, s in summaries.items()})
