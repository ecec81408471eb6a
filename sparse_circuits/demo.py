"""`sparse-circuits demo`: the whole method on the embedded default, one stage after another.

stdlib + generated programs -> tokenizer and tokens (and the contamination report) -> sparse and
dense models -> task scores -> circuits of the tasks each model does (pruned and validated) ->
report. Every stage reuses what an earlier call left in the same directory: data by content
fingerprint, training by resuming from the last checkpoint (a finished run is left as it is), task
scores and circuits by weight hash.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .circuits.api import prune_all
from .circuits.summary import BIGRAM_DECIDED, PruneAllSummary, bigram_decided, shared_geomean
from .circuits.prune import PruneConfig
from .config import ModelKind, RunConfig, resolve_run_config
from .data import DEFAULT_SOURCES, DataMeta, TokenData, prepare_data
from .errors import UserError
from .fileio import write_json
from .report import build_report
from .report.site import SNIPPET_WINDOWS
from .tasks.contamination import contamination_report
from .tasks.evaluate import LEARNED_ACCURACY, load_or_evaluate_run
from .parallel import Job, TrainJob, log_for, one_thread, side_by_side, side_by_side_workers, train_side_by_side
from .runs import Run
from .train import full_validation_loss, train


@dataclass(frozen=True)
class DemoScale:
    name: str
    preset: str
    model: dict  # overrides of the preset's model section
    train: dict  # overrides of the preset's train section
    prune_steps: int
    prune_target: float
    prune_pairs: int
    include_controls: bool
    min_accuracy: float | None  # prune only tasks the model does at least this well (None: prune-all's loss limit)
    snippet_windows: int
    synthetic_tokens: int | None  # generated training tokens; None: `data`'s default share (half)
    contamination: bool  # write contamination.json with the data


# The default: `micro` at width 64 (d_mlp 256) at batch 8 for 16,000 steps (16.4M tokens), the two
# models side by side, one thread each: within the demo's 30-minute budget on 2 CPU cores. Small
# batches and twice the tokens are what made the sparse model learn to bind a variable
# (`set_or_string_fixedvarname`; docs/results.md, issue 26). Only learned tasks are pruned: a
# circuit of a task the model cannot do means nothing.
DEFAULT = DemoScale("default", "micro", {"d_model": 64, "d_mlp": 256}, {"batch_size": 8, "steps": 16_000},
                    prune_steps=200, prune_target=0.15,
                    prune_pairs=128, include_controls=True, min_accuracy=LEARNED_ACCURACY,
                    snippet_windows=SNIPPET_WINDOWS, synthetic_tokens=None, contamination=True)
# The `micro` preset as it is (2 x 128): the capability study's and the frontier grid's model; ~1
# dense task more, twice the training time, about an hour in all on 2 cores.
WIDE = DemoScale("wide", "micro", {}, {}, prune_steps=200, prune_target=0.15, prune_pairs=128, include_controls=True,
                 min_accuracy=LEARNED_ACCURACY, snippet_windows=SNIPPET_WINDOWS, synthetic_tokens=None,
                 contamination=True)
# The reference setting (issue 26): the 2 x 128 `micro` models at batch 8 for 48,000 steps (49M tokens,
# six times `micro`'s), trained side by side, one thread each: about two hours on 2 cores, resumable.
REFERENCE = DemoScale("reference", "micro", {}, {"batch_size": 8, "steps": 48_000, "eval_every": 1000,
                                                  "checkpoint_every": 1000, "log_every": 50},
                      prune_steps=200, prune_target=0.15, prune_pairs=128, include_controls=True,
                      min_accuracy=LEARNED_ACCURACY, snippet_windows=SNIPPET_WINDOWS, synthetic_tokens=None,
                      contamination=True)
# Smoke-test scale: a tiny model trained just long enough for the one task the bigram statistics
# nearly give away (else_elif, whole-model task loss ~0.3), pruned to a looser target than the
# default 0.15 so that every later stage has a circuit to work on. Fewer generated tokens and no
# contamination search (tested on its own) keep it at about a minute.
QUICK = DemoScale("quick", "tiny", {}, {"steps": 600, "batch_size": 16, "eval_every": 100, "checkpoint_every": 100,
                                        "log_every": 20}, prune_steps=100, prune_target=0.4, prune_pairs=64,
                  include_controls=False, min_accuracy=None, snippet_windows=64, synthetic_tokens=500_000,
                  contamination=False)
KINDS = (ModelKind.SPARSE, ModelKind.DENSE)  # the demo trains one of each, in this order
TIMINGS_FILE = "demo.json"


@dataclass
class StageResult:
    name: str
    seconds: float
    note: str


@dataclass
class HeldOut:
    """Loss on the whole held-out split of real code."""
    nats_per_token: float
    nats_per_char: float


@dataclass
class ModelOnTask:
    accuracy: float
    loss: float
    nodes: int | None  # None: no circuit
    edges: int | None
    control: bool | None  # None: the task has no prune-all outcome


@dataclass
class TaskRow:
    """One task in both models (the field order is demo.json's)."""
    sparse: ModelOnTask
    bigram_decided: bool
    dense: ModelOnTask

    def of(self, kind: ModelKind) -> ModelOnTask:
        return self.sparse if kind == ModelKind.SPARSE else self.dense


@dataclass
class SharedEdges:
    """Geometric mean of edges of each model over the tasks both have a circuit for."""
    sparse: float | None
    dense: float | None
    tasks: int


@dataclass
class DemoSummary:
    """What the demo did and found: demo.json, and the closing table."""
    scale: str
    seed: int
    out: str
    report: str
    stages: list[StageResult]
    total_seconds: float
    val_loss: dict[str, HeldOut]  # ModelKind value -> loss
    report_pages: dict[str, int]  # page -> bytes
    tasks: dict[str, TaskRow]
    geomean_edges_both: SharedEdges

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Demo:
    out: Path
    scale: DemoScale
    log: Callable[[str], None] = print
    progress: bool = True
    seed: int = 0  # the training seed of both models (the data and the task sets stay the same)
    results: list[StageResult] = field(default_factory=list)
    report_pages: dict[str, int] = field(default_factory=dict)  # page -> bytes

    @property
    def data_dir(self) -> Path:
        return self.out / "data"

    def run_dir(self, kind: ModelKind) -> Path:
        return self.out / kind.value

    @property
    def site_dir(self) -> Path:
        return self.out / "report"

    @property
    def side_by_side(self) -> bool:
        """Train the two models at once, one thread each (parallel.py), where there are >= 2 cores."""
        return side_by_side_workers(self.scale_device, 2) >= 2

    @property
    def scale_device(self) -> str:
        return self.scale.train.get("device", "cpu")

    def stages(self) -> list[tuple[str, Callable[[], str]]]:
        training = [("train sparse + dense", self.train_both)] if self.side_by_side else \
            [(f"train {k.value}", lambda k=k: self.train(k)) for k in KINDS]
        pruning = [("prune sparse + dense", self.prune_both)] if self.side_by_side else \
            [(f"prune {k.value}", lambda k=k: self.prune(k)) for k in KINDS]
        return [("data", self.data)] + training + [("task scores", self.task_scores)] + pruning + \
            [("report", self.report)]

    def run(self) -> DemoSummary:
        stages = self.stages()
        for i, (name, fn) in enumerate(stages, 1):
            self.log(f"[{i}/{len(stages)}] {name}")
            start = time.perf_counter()
            note = fn()
            seconds = time.perf_counter() - start
            self.results.append(StageResult(name, seconds, note))
            self.log(f"[{i}/{len(stages)}] {name}: {note} ({_duration(seconds)})")
        summary = self.summary()
        write_json(self.out / TIMINGS_FILE, summary.as_dict())
        return summary

    # -- stages ---------------------------------------------------------------------------------

    def data(self) -> str:
        meta = prepare_data(DEFAULT_SOURCES, self.data_dir, synthetic_tokens=self.scale.synthetic_tokens,
                            log=self.log)
        note = (f"{meta.tokens.train:,} train tokens ({meta.synthetic.tokens:,} generated) / "
                f"{meta.tokens.val:,} validation tokens")
        if self.scale.contamination:
            report = contamination_report(self.data_dir, log=lambda _: None)
            note += f"; long test prompts found verbatim: {report.long_verbatim}"
        return note

    def run_config(self, kind: ModelKind) -> RunConfig:
        overrides = {"data_dir": str(self.data_dir),
                     "model": {**self.scale.model, "vocab_size": DataMeta.load(self.data_dir).vocab_size},
                     "train": dict(self.scale.train) | {"seed": self.seed}}
        if kind == ModelKind.DENSE:
            overrides["sparsity"] = {"nonzero_frac": 1.0}
        cfg = resolve_run_config(self.scale.preset, overrides, where=f"demo {kind.value} config")
        return one_thread(cfg) if self.side_by_side else cfg

    def _job(self, kind: ModelKind) -> TrainJob:
        cfg, run_dir = self.run_config(kind), self.run_dir(kind)
        return TrainJob(cfg, run_dir, Run(run_dir).continues_with(cfg, hint="; another demo scale?"))

    @staticmethod
    def _trained(job: TrainJob, before: int, final: dict) -> str:
        done = "reused" if before >= job.cfg.train.steps else f"{job.cfg.train.steps - before} steps"
        return f"{done}; val loss {final.get('val_loss', float('nan')):.3f}"

    def train(self, kind: ModelKind) -> str:
        job = self._job(kind)
        before = Run(job.out).final_metrics().get("step", 0) if job.resume else 0
        return self._trained(job, before, train(job.cfg, job.out, resume=job.resume, progress=self.progress))

    def train_both(self) -> str:
        jobs = [self._job(kind) for kind in KINDS]
        before = [Run(j.out).final_metrics().get("step", 0) if j.resume else 0 for j in jobs]
        finals = train_side_by_side(jobs, 2, progress=self.progress, names=[f"train {k.value}" for k in KINDS])
        return "side by side, one thread each: " + "; ".join(
            f"{kind.value} {self._trained(j, b, f)}" for kind, j, b, f in zip(KINDS, jobs, before, finals))

    def task_scores(self) -> str:
        learned = []
        for kind in KINDS:
            learned.append(len(load_or_evaluate_run(self.run_dir(kind), progress=self.progress).learned(LEARNED_ACCURACY)))
        return f"tasks at accuracy >= {LEARNED_ACCURACY}: sparse {learned[0]}, dense {learned[1]}"

    def _prune_args(self, kind: ModelKind) -> dict:
        return dict(run_dir=self.run_dir(kind), out_root=Run(self.run_dir(kind)).circuits_dir,
                    cfg=PruneConfig(steps=self.scale.prune_steps, target_loss=self.scale.prune_target),
                    n_pairs=self.scale.prune_pairs, include_controls=self.scale.include_controls, reuse=True,
                    min_accuracy=self.scale.min_accuracy)

    @staticmethod
    def _pruned(summary: PruneAllSummary) -> str:
        gm = summary.geomean_edges
        return f"{summary.tasks_with_circuit} circuits" + (f", geometric mean {gm:.1f} edges" if gm else "")

    def prune(self, kind: ModelKind) -> str:
        return self._pruned(prune_all(**self._prune_args(kind), progress=self.progress,
                                      log=lambda line: self.log("  " + line)))

    def prune_both(self) -> str:
        jobs = [Job(f"prune {kind.value}", prune_all,
                    self._prune_args(kind) | {"progress": False, "log": log_for(kind.value)}) for kind in KINDS]
        summaries = side_by_side(jobs, 2)
        return "side by side, one thread each: " + "; ".join(
            f"{kind.value} {self._pruned(s)}" for kind, s in zip(KINDS, summaries))

    def report(self) -> str:
        site = build_report([self.run_dir(k) for k in KINDS], [], self.site_dir,
                            progress=self.progress, snippet_windows=self.scale.snippet_windows, log=self.log)
        self.report_pages = site.pages
        return f"{len(site.pages)} pages, {site.total_bytes / 1e6:.1f} MB"

    # -- summary --------------------------------------------------------------------------------

    def held_out_loss(self, kind: ModelKind) -> HeldOut:
        """Loss on the whole held-out split of real code, per token and per character."""
        model, cfg = Run(self.run_dir(kind)).load_model()
        loss = full_validation_loss(model, TokenData(cfg.data_dir), cfg.model.context)
        return HeldOut(loss.nats_per_token, loss.nats_per_char)

    def summary(self) -> DemoSummary:
        scores, summaries = {}, {}
        for kind in KINDS:
            run = Run(self.run_dir(kind))
            scores[kind] = load_or_evaluate_run(run.dir, progress=False).by_task()
            summaries[kind.value] = PruneAllSummary.load(run.circuits_dir)

        def on(kind: ModelKind, task: str) -> ModelOnTask:
            score, c = scores[kind][task], summaries[kind.value].tasks.get(task)
            return ModelOnTask(score.accuracy, score.loss, c.num_nodes if c else None, c.num_edges if c else None,
                               c.control if c else None)

        rows = {task: TaskRow(on(ModelKind.SPARSE, task), bigram_decided(score.bigram_accuracy),
                              on(ModelKind.DENSE, task))
                for task, score in scores[ModelKind.DENSE].items()}
        shared = shared_geomean(summaries)
        return DemoSummary(
            scale=self.scale.name, seed=self.seed, out=str(self.out), report=str(self.site_dir / "index.html"),
            stages=list(self.results), total_seconds=sum(r.seconds for r in self.results),
            val_loss={k.value: self.held_out_loss(k) for k in KINDS}, report_pages=self.report_pages, tasks=rows,
            geomean_edges_both=SharedEdges(shared.geomean_edges["sparse"], shared.geomean_edges["dense"],
                                           len(shared.tasks)))


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def summary_table(summary: DemoSummary) -> str:
    """The demo's closing table: stage times, then every task with a circuit in either model."""
    lines = [f"{'stage':<14} {'time':>12}  result"]
    for s in summary.stages:
        lines.append(f"{s.name:<14} {_duration(s.seconds):>12}  {s.note}")
    lines.append(f"{'total':<14} {_duration(summary.total_seconds):>12}")
    sv, dv = summary.val_loss[ModelKind.SPARSE.value], summary.val_loss[ModelKind.DENSE.value]
    lines.append(f"\nloss on the whole held-out split: sparse {sv.nats_per_token:.3f}, dense "
                 f"{dv.nats_per_token:.3f} nats/token ({sv.nats_per_char:.4f}, {dv.nats_per_char:.4f} nats/char)")
    lines.append(f"\n{'task':<28} {'acc sparse':>10} {'acc dense':>9} {'sparse nodes/edges':>18} "
                 f"{'dense nodes/edges':>17} {'dense/sparse edges':>18}")
    fmt = lambda m: "-" if m.edges is None else f"{m.nodes}/{m.edges}"
    shown = 0
    for task, r in summary.tasks.items():
        s, d = r.sparse, r.dense
        if s.edges is None and d.edges is None:
            continue
        shown += 1
        ratio = (f"{max(d.edges, 1) / max(s.edges, 1):.1f}x" if s.edges is not None and d.edges is not None
                 else "-") + (" (bigram)" if r.bigram_decided else "")
        lines.append(f"{task:<28} {s.accuracy:>10.2f} {d.accuracy:>9.2f} {fmt(s):>18} {fmt(d):>17} {ratio:>18}")
    if not shown:
        lines.append("(no task reached the pruning target in either model)")
    g = summary.geomean_edges_both
    if g.tasks:
        lines.append(f"geometric mean of edges over the {g.tasks} tasks with both circuits (not bigram-decided): "
                     f"sparse {g.sparse:.1f}, dense {g.dense:.1f} ({g.dense / g.sparse:.1f}x)")
    if any(r.bigram_decided for r in summary.tasks.values()):
        lines.append(f"(bigram): the corpus bigram table alone gets >= {BIGRAM_DECIDED} of the test pairs; "
                     "kept out of the mean")
    lines.append(f"\nreport: {summary.report}\n  open it in a browser, or: sparse-circuits view "
                 f"{Path(summary.report).parent}")
    return "\n".join(lines)


def run_demo(out: str | os.PathLike, scale: DemoScale = DEFAULT, progress: bool = True, log=print,
             seed: int = 0) -> DemoSummary:
    if seed < 0:
        raise UserError(f"demo: --seed must be >= 0, got {seed}")
    demo = Demo(Path(out), scale, log=log, progress=progress, seed=seed)
    demo.out.mkdir(parents=True, exist_ok=True)
    return demo.run()
