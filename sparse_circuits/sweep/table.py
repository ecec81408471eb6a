"""The sweep's table: one `ModelRow` per finished model, and the geometric mean of circuit edges
over one fixed task set for every model (DIR/sweep.json and DIR/sweep.csv).

The geometric mean is only comparable between models when it is taken over the same tasks. The
set is the grid's `tasks`, or else the tasks every finished model has a counted circuit for
(no controls, no bigram-decided tasks). A model without a circuit for a task of a fixed set gets
no geometric mean, and the task is listed against it; tasks left out of a shared set are listed
with the models that lack them. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, field, fields

from ..circuits.summary import geomean_edges
from ..errors import UserError
from ..fileio import read_json, write_json, write_text
from ..tasks import all_tasks
from .grid import ModelKind

TABLE_JSON = "sweep.json"
TABLE_CSV = "sweep.csv"
ROW_FILE = "sweep_row.json"  # in each model's run directory: the finished model's row


@dataclass
class ModelRow:
    name: str
    kind: ModelKind
    width: int
    n_layer: int
    d_mlp: int
    nonzero_frac: float
    activation_frac: float | None
    seed: int
    total_params: int
    nonzero_params: int
    steps: int
    tokens: int
    val_loss: float  # nats/token on the whole held-out split of real code
    val_nats_per_char: float
    tasks_learned: list[str]  # test accuracy >= LEARNED_ACCURACY
    circuits: dict[str, int]  # task -> edges, counted circuits only (no controls, not bigram-decided)
    bigram_decided: list[str]
    no_circuit: list[str]  # attempted, none reached the target
    train_seconds: float
    prune_seconds: float
    weights_sha256: str
    prune_settings: dict

    def as_dict(self) -> dict:
        return asdict(self) | {"kind": self.kind.value}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "ModelRow":
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) != names:
            raise UserError(f"{where}: damaged sweep row; delete it and run `sparse-circuits sweep` again")
        return cls(**d | {"kind": ModelKind(d["kind"])})


@dataclass
class TaskSet:
    tasks: list[str]
    fixed_by_grid: bool
    # Tasks some model has a circuit for that are not in the set, with the models that lack them.
    left_out: dict[str, list[str]] = field(default_factory=dict)


def task_set(rows: list[ModelRow], grid_tasks: list[str]) -> TaskSet:
    """The fixed set of the geometric mean (see the module docstring)."""
    if grid_tasks:
        return TaskSet(list(grid_tasks), True)
    names = [t.name for t in all_tasks(include_controls=False)]
    shared = [t for t in names if rows and all(t in r.circuits for r in rows)]
    left_out = {t: [r.name for r in rows if t not in r.circuits] for t in names
                if t not in shared and any(t in r.circuits for r in rows)}
    return TaskSet(shared, False, left_out)


def geomean_over(row: ModelRow, tasks: list[str]) -> tuple[float | None, list[str]]:
    """(geometric mean of the row's edges over `tasks`, tasks it has no circuit for). The mean is
    None when any task is missing (or the set is empty): a mean over fewer tasks is another number."""
    missing = [t for t in tasks if t not in row.circuits]
    if missing or not tasks:
        return None, missing
    return geomean_edges([row.circuits[t] for t in tasks]), []


@dataclass
class SweepTable:
    rows: list[ModelRow]
    task_set: TaskSet

    def geomean(self, row: ModelRow) -> float | None:
        return geomean_over(row, self.task_set.tasks)[0]

    def without_mean(self) -> list[tuple[ModelRow, list[str]]]:
        """(row, its missing tasks) for every model with no geometric mean over the set."""
        return [(r, missing) for r in self.rows for gm, missing in [geomean_over(r, self.task_set.tasks)]
                if gm is None]

    def as_dict(self) -> dict:
        out = []
        for r in self.rows:
            gm, missing = geomean_over(r, self.task_set.tasks)
            out.append(r.as_dict() | {"geomean_edges": gm, "missing_tasks": missing})
        return {"task_set": asdict(self.task_set), "rows": out}

    def csv(self) -> str:
        cols = ["name", "kind", "width", "nonzero_frac", "activation_frac", "seed", "total_params", "nonzero_params",
                "val_loss", "val_nats_per_char", "tasks_learned", "geomean_edges", "missing_tasks",
                "train_seconds", "prune_seconds"]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in self.as_dict()["rows"]:
            w.writerow([len(r[c]) if c == "tasks_learned" else " ".join(r[c]) if c == "missing_tasks"
                        else "" if r[c] is None else r[c] for c in cols])
        return buf.getvalue()

    def save(self, out_dir: str | os.PathLike) -> None:
        write_json(os.path.join(out_dir, TABLE_JSON), self.as_dict())
        write_text(os.path.join(out_dir, TABLE_CSV), self.csv())

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "SweepTable":
        path = os.path.join(out_dir, TABLE_JSON)
        d = read_json(path, "sweep table (run `sparse-circuits sweep` first)")
        try:
            rows = [ModelRow.from_dict({k: v for k, v in r.items() if k not in ("geomean_edges", "missing_tasks")},
                                       path) for r in d["rows"]]
            return cls(rows, TaskSet(**d["task_set"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: damaged sweep table ({type(e).__name__}: {e}); "
                            "run `sparse-circuits sweep` again to rewrite it") from None
