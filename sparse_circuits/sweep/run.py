"""`sparse-circuits sweep`: train a grid of models, score their tasks, prune every task each model
does, and write one table.

DIR/grid.json                     the resolved grid and data directory
DIR/models/NAME/                  an ordinary run directory per model (resumable; `info`, `report` work on it)
DIR/models/NAME/circuits/         prune-all at the grid's target (summary.json, one circuit per task)
DIR/models/NAME/sweep_row.json    written last: the model is finished
DIR/sweep.json, DIR/sweep.csv     the table (rewritten after every model)
DIR/matched.json                  the target-loss sweep of matched sparse/dense pairs (Fig. 2)
DIR/history/NAME/                 a task's circuit across the checkpoints of one model

Every stage reuses what an earlier call finished: training resumes from the last checkpoint,
task scores and circuits are cached by weight hash, so a killed sweep loses at most the models in
progress (and of those, only the steps after their last checkpoints). On a CPU with several cores
the models train side by side, one thread each (`--jobs`, parallel.py: ~1.3x the work of one
two-thread training on 2 cores), then are scored and pruned one after the other, each model's tasks
side by side (the same `--jobs`); on several GPUs,
start one process per device with `--shard K/N --device cuda:K`, then run the sweep once more
without `--shard` for the table and the matched and history stages.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..circuits.api import prune_all
from ..circuits.history import CIRCUIT_HISTORY_FILE, CircuitHistory, circuit_history
from ..circuits.summary import PruneAllSummary, TaskStatus
from ..config import RunConfig, to_dict
from ..data import TokenData
from ..errors import UserError
from ..fileio import read_json, write_json
from ..parallel import TrainJob, one_thread, side_by_side_workers, train_side_by_side
from ..tasks import all_tasks
from ..tasks.evaluate import LEARNED_ACCURACY, load_or_evaluate_run
from ..runs import Run
from ..train import full_validation_loss, train
from .grid import GridConfig, ModelKind, ModelSpec
from .table import ROW_FILE, ModelRow, SweepTable, task_set

GRID_FILE = "grid.json"
MATCHED_FILE = "matched.json"
HISTORY_DIR = "history"


@dataclass
class MatchedPoint:
    model: str
    task: str
    target_loss: float
    edges: int | None  # None: no circuit reached this target
    loss: float | None  # the circuit's task loss on the pruning pairs
    test_loss: float | None  # on the held-out test split (sufficiency)


@dataclass
class MatchedPair:
    """A sparse model and the dense model nearest it in pretraining loss, pruned at every target."""
    seed: int
    sparse: str
    dense: str
    sparse_val_loss: float
    dense_val_loss: float
    tasks: list[str]  # the tasks both have a counted circuit for at the grid's target
    points: list[MatchedPoint]

    @classmethod
    def from_dict(cls, d: dict) -> "MatchedPair":
        return cls(**d | {"points": [MatchedPoint(**p) for p in d["points"]]})


@dataclass
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        k, sep, n = text.partition("/")
        if not sep or not k.isdigit() or not n.isdigit() or not 0 <= int(k) < int(n):
            raise UserError(f"sweep: --shard {text!r} must be K/N with 0 <= K < N (e.g. 0/4)")
        return cls(int(k), int(n))


@dataclass
class Sweep:
    grid: GridConfig
    data_dir: Path
    out: Path
    device: str | None = None
    shard: Shard | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    jobs: int = 0  # trainings, and a model's tasks in pruning, side by side, one thread each (0: one per core)
    configs: dict[str, RunConfig] = field(default_factory=dict)

    def run_dir(self, spec: ModelSpec) -> Path:
        return self.out / "models" / spec.name

    @property
    def prune_jobs(self) -> int:
        """A model's tasks pruned at once (pruning runs on the CPU whatever trains the models)."""
        return self.jobs or side_by_side_workers("cpu", len(all_tasks()))

    def prune_settings(self) -> dict:
        return to_dict(self.grid.prune)

    def run(self) -> SweepTable:
        specs = self.grid.models()
        # Everything is checked before anything is written: every model's config and the data.
        for spec in specs:
            cfg = self.grid.run_config(spec, self.data_dir)
            if self.device:
                cfg.train.device = self.device
                cfg.validate()
            self.configs[spec.name] = cfg
        TokenData(self.data_dir)
        mine = [s for i, s in enumerate(specs) if self.shard is None or i % self.shard.count == self.shard.index]
        self._check_out()
        self.train_side_by_side(mine)
        for i, spec in enumerate(mine, 1):
            self.log(f"[{i}/{len(mine)}] {spec.name}")
            self.model(spec)
            table = self.table(specs)
            table.save(self.out)
            self.ready_stages(table)  # as soon as their models are finished: a partial sweep already has them
        table = self.table(specs)
        table.save(self.out)
        self.ready_stages(table)
        if len(table.rows) < len(specs):
            self.log(f"{len(table.rows)} of {len(specs)} models finished (other shards?); run `sweep` again "
                     "without --shard when they are")
        return table

    def ready_stages(self, table: SweepTable) -> None:
        """The matched pairs of every seed whose models are finished, and the history once its model is.
        Only one process runs them (no --shard, or shard 0); both reuse whatever they finished before."""
        if self.shard is not None and self.shard.index != 0:
            return
        done = {r.name for r in table.rows}
        m = self.grid.matched
        if m is not None:
            ready = [seed for seed in (m.seeds or [self.grid.seeds[0]])
                     if all(s.name in done for s in self.grid.models()
                            if s.seed == seed and (s.kind == ModelKind.DENSE or s == self.matched_spec(seed)))]
            if ready and ready != [p.seed for p in load_matched(self.out)]:
                self.matched(table, ready)
        spec = self.grid.history_spec()
        if spec is not None and spec.name in done:
            self.history()

    def _check_out(self) -> None:
        record = {"grid": self.grid.as_dict(), "data_dir": str(self.data_dir)}
        path = self.out / GRID_FILE
        if path.is_file():
            earlier = read_json(path, "sweep grid")
            if earlier.get("data_dir") != record["data_dir"]:
                raise UserError(f"{self.out}: holds a sweep on other data ({earlier.get('data_dir')}); "
                                "use another --out")
            if earlier != record:
                self.log(f"{self.out}: the grid changed; finished models with the same config and prune settings "
                         "are kept, the rest are (re)done")
        elif self.out.is_dir() and any(self.out.iterdir()):
            # A run or data directory (or anything else) is not a sweep: writing models/ and the table
            # into it would mix two things no command can tell apart.
            raise UserError(f"{self.out}: already holds files and no {GRID_FILE}, so it is not a sweep; "
                            "choose another --out")
        write_json(path, record)

    def table(self, specs: list[ModelSpec]) -> SweepTable:
        rows = [r for r in (self._finished_row(s) for s in specs) if r is not None]
        return SweepTable(rows, task_set(rows, self.grid.tasks))

    def _finished_row(self, spec: ModelSpec) -> ModelRow | None:
        run = Run(self.run_dir(spec))
        path = run.dir / ROW_FILE
        if not (path.is_file() and run.has_weights()):
            return None
        try:
            row = ModelRow.from_dict(read_json(path, "sweep row"), str(path))
        except UserError:
            return None  # damaged: the model is redone (its training and circuits are reused)
        same = (row.weights_sha256 == run.weights_sha256() and row.prune_settings == self.prune_settings()
                and row.steps == self.configs[spec.name].train.steps)
        return row if same else None

    # -- one model --------------------------------------------------------------------------------

    def _job(self, spec: ModelSpec) -> TrainJob:
        cfg, run_dir = self.configs[spec.name], self.run_dir(spec)
        return TrainJob(cfg, run_dir, Run(run_dir).continues_with(cfg, hint=" from the one the grid gives it"))

    def train_side_by_side(self, specs: list[ModelSpec]) -> None:
        """Train the models not yet trained, several at once, one thread each (a CPU with cores to spare)."""
        todo = [s for s in specs if self._finished_row(s) is None
                and Run(self.run_dir(s)).final_metrics().get("step", 0) < self.configs[s.name].train.steps]
        device = self.configs[specs[0].name].train.device if specs else "cpu"
        workers = self.jobs or side_by_side_workers(device, len(todo))
        if workers < 2 or len(todo) < 2:
            return
        for s in specs:
            self.configs[s.name] = one_thread(self.configs[s.name])
        self.log(f"training {len(todo)} models, {workers} at a time, one thread each")
        train_side_by_side([self._job(s) for s in todo], workers, self.progress, [s.name for s in todo])

    def model(self, spec: ModelSpec) -> ModelRow:
        row = self._finished_row(spec)
        if row is not None:
            self.log("  finished earlier; kept")
            return row
        job = self._job(spec)
        cfg, run_dir, run = job.cfg, job.out, Run(job.out)
        final = train(cfg, run_dir, resume=job.resume, progress=self.progress)
        self.log(f"  trained: val loss {final.get('val_loss', float('nan')):.3f}")
        scores = load_or_evaluate_run(run_dir, progress=self.progress)
        p = self.grid.prune
        summary = prune_all(run_dir, run.circuits_dir, p.config(), p.budget, p.pairs,
                            include_controls=p.include_controls, max_full_loss=p.max_full_loss, progress=self.progress,
                            log=lambda line: self.log("  " + line), reuse=True, jobs=self.prune_jobs)
        model, _ = run.load_model(sparse_threshold=0.0)
        held = full_validation_loss(model, TokenData(cfg.data_dir), cfg.model.context)
        params = list(model.parameters())
        row = ModelRow(
            name=spec.name, kind=spec.kind, width=spec.width, n_layer=cfg.model.n_layer, d_mlp=cfg.model.d_mlp,
            nonzero_frac=spec.nonzero_frac, activation_frac=spec.activation_frac, seed=spec.seed,
            total_params=sum(t.numel() for t in params), nonzero_params=sum(int((t != 0).sum()) for t in params),
            steps=cfg.train.steps, tokens=cfg.train.steps * cfg.train.batch_size * cfg.model.context,
            val_loss=held.nats_per_token, val_nats_per_char=held.nats_per_char,
            tasks_learned=scores.learned(LEARNED_ACCURACY),
            circuits={n: o.num_edges for n, o in summary.tasks.items() if o.counted},
            bigram_decided=summary.bigram_decided_tasks,
            no_circuit=[n for n, o in summary.tasks.items() if o.status == TaskStatus.NO_CIRCUIT],
            train_seconds=float(run.final_metrics().get("elapsed_s", 0.0)),
            prune_seconds=sum(o.seconds or 0.0 for o in summary.tasks.values()),
            weights_sha256=run.weights_sha256(), prune_settings=self.prune_settings())
        write_json(run_dir / ROW_FILE, row.as_dict())
        self.log(f"  {len(row.tasks_learned)} tasks at accuracy >= {LEARNED_ACCURACY}, {len(row.circuits)} counted "
                 f"circuits, held-out loss {row.val_loss:.3f}")
        return row

    # -- the matched pairs (Fig. 2) ------------------------------------------------------------------

    def matched_spec(self, seed: int) -> ModelSpec:
        m, acts = self.grid.matched, self.grid.activation_fracs or [None]
        return ModelSpec(ModelKind.SPARSE, m.width, m.nonzero_frac, acts[0], seed)

    def matched(self, table: SweepTable, seeds: list[int]) -> list[MatchedPair]:
        m = self.grid.matched
        by_name = {r.name: r for r in table.rows}
        pairs = []
        for seed in seeds:
            sparse = by_name[self.matched_spec(seed).name]
            dense = nearest_dense(table.rows, sparse)
            tasks = [t.name for t in all_tasks(include_controls=False)
                     if t.name in sparse.circuits and t.name in dense.circuits]
            self.log(f"matched: {sparse.name} ({sparse.val_loss:.3f}) with {dense.name} ({dense.val_loss:.3f}), "
                     f"{len(tasks)} shared tasks, targets {m.target_losses}")
            pair = MatchedPair(seed, sparse.name, dense.name, sparse.val_loss, dense.val_loss, tasks, [])
            for row in (sparse, dense):
                run_dir = self.out / "models" / row.name
                for target in m.target_losses:
                    summary = self._at_target(run_dir, target, tasks)
                    for task in tasks:
                        o = summary.tasks[task]
                        pair.points.append(MatchedPoint(row.name, task, target, o.num_edges, o.loss, o.test_loss))
            pairs.append(pair)
            write_json(self.out / MATCHED_FILE, [asdict(p) for p in pairs])
        return pairs

    def _at_target(self, run_dir: Path, target: float, tasks: list[str]) -> PruneAllSummary:
        p = self.grid.prune
        if target == p.target_loss:  # the model's own prune-all already has these
            return PruneAllSummary.load(Run(run_dir).circuits_dir)
        return prune_all(run_dir, run_dir / f"circuits-target-{target:g}", p.config(target), p.budget, p.pairs,
                         include_controls=False, max_full_loss=p.max_full_loss, progress=self.progress, reuse=True,
                         only=tasks, jobs=self.prune_jobs,
                         log=lambda line: self.log(f"  target {target:g}: {line}"))

    # -- circuits across training ----------------------------------------------------------------------

    def history(self) -> None:
        h, spec = self.grid.history, self.grid.history_spec()
        p = self.grid.prune
        out = self.out / HISTORY_DIR / spec.name
        kept = len(Run(self.run_dir(spec)).checkpoint_dirs())
        if (out / CIRCUIT_HISTORY_FILE).is_file():
            earlier = CircuitHistory.load(out / CIRCUIT_HISTORY_FILE)
            if (earlier.task == h.task and earlier.target_loss == p.target_loss and len(earlier.points) == kept
                    and all(q.weight_density is not None for q in earlier.points)):  # older files lack it
                return
        self.log(f"history: {h.task} across the checkpoints of {spec.name}")
        circuit_history(self.run_dir(spec), h.task, out, p.config(), p.budget, p.pairs,
                        progress=self.progress, log=lambda line: self.log("  " + line))


def nearest_dense(rows: list[ModelRow], sparse: ModelRow) -> ModelRow:
    """The dense model of the same seed (any seed if that has none) nearest in held-out loss."""
    dense = [r for r in rows if r.kind == ModelKind.DENSE]
    same_seed = [r for r in dense if r.seed == sparse.seed]
    candidates = same_seed or dense
    if not candidates:
        raise UserError("sweep: the grid has no dense model to match")
    return min(candidates, key=lambda r: abs(r.val_loss - sparse.val_loss))


def run_sweep(grid: GridConfig, data_dir: str | os.PathLike, out: str | os.PathLike, device: str | None = None,
              shard: Shard | None = None, progress: bool = True, log=print, jobs: int = 0) -> SweepTable:
    if jobs < 0:
        raise UserError(f"sweep: --jobs must be >= 0 (0: one per core), got {jobs}")
    sweep = Sweep(grid, Path(data_dir), Path(out), device, shard, progress, log, jobs)
    return sweep.run()


def load_matched(out: str | os.PathLike) -> list[MatchedPair]:
    path = Path(out) / MATCHED_FILE
    if not path.is_file():
        return []
    try:
        return [MatchedPair.from_dict(d) for d in read_json(path, "matched pairs")]
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: damaged ({type(e).__name__}: {e}); run `sparse-circuits sweep` again") from None
