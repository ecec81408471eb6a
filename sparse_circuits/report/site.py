"""`sparse-circuits report`: a self-contained static site about trained runs and their circuits.

SITE_DIR/index.html                 the models, their training curves, task table, circuits, sizes
SITE_DIR/circuits/{model}--{task}.html   one page per circuit (graph, node panels, loss sweep)

Every page carries its own CSS, script and data (no network, works from file://). Corpus and task
text reaches the page only as JSON inside a <script type="application/json"> element (with <, >
and & escaped) and is put on the page with textContent; the HTML around it comes from Jinja2
templates with autoescaping on.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from ..bridges.core import BridgeQuality
from ..bridges.run import BridgeRecord
from ..bridges.steer import SteeringResult
from ..circuits.circuit import Circuit, load_circuit
from ..circuits.summary import SUMMARY_FILE, PruneAllSummary, TaskStatus
from ..circuits.validate import VALIDATION_FILE, Validation
from ..config import ModelKind, to_dict
from ..errors import UserError
from ..fileio import write_text
from ..model import GPT
from ..nodes import NodeLocation
from ..tasks import Split, get_task
from ..tasks.evaluate import CHANCE_LOSS, RunScores, TaskTensors, load_or_evaluate_run
from ..runs import Run, RunSummary
from . import analysis, plots
from .pages import environment

PAGE_PAIRS = 64  # test-split pairs whose activations a circuit page shows
SNIPPET_WINDOWS = 256  # held-out pretraining windows searched for snippets


@dataclass
class CircuitEntry:
    directory: Path
    circuit: Circuit
    validation: Validation | None
    page: str = ""  # path relative to the site root


@dataclass
class RunView:
    run: Run
    label: str
    kind: ModelKind
    summary: RunSummary
    config: dict
    metrics: list[dict]
    scores: RunScores
    prune_summary: PruneAllSummary | None
    weights_sha256: str
    circuits: list[CircuitEntry] = field(default_factory=list)
    bridges: BridgeView | None = None  # a bridged run's bridges
    steering: list[SteeringView] = field(default_factory=list)  # one per steer run


@dataclass
class BridgeView:
    dense_run: str
    config: dict
    quality: BridgeQuality | None  # None: the bridged run has not finished


@dataclass
class SteeringView:
    title: str
    result: SteeringResult
    png: str | None  # data URI of the plot


def _bridge_view(run: Run) -> tuple[BridgeView | None, list[SteeringView]]:
    """Bridge quality and steering results of a bridged run (docs/bridges.md), if any."""
    if not run.bridge_record_path.is_file():
        return None, []
    record = BridgeRecord.load(run.bridge_record_path)
    quality = BridgeQuality.load(run.bridge_quality_path) if run.bridge_quality_path.is_file() else None
    steering = []
    for path in sorted(run.steering_dir.glob("*.json")) if run.steering_dir.is_dir() else []:
        png = path.with_suffix(".png")
        result = SteeringResult.load(path)
        steering.append(SteeringView(f"{result.task}: {result.node} via {result.site}", result,
                                     "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
                                     if png.is_file() else None))
    return BridgeView(record.dense_run, record.bridge, quality), steering


def _unique_label(run_dir: Path, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_dir.resolve().name) or "model"
    label, n = base, 2
    while label in taken:
        label, n = f"{base}-{n}", n + 1
    taken.add(label)
    return label


def load_run_view(run_dir: Path, taken: set[str], progress: bool) -> RunView:
    run = Run(run_dir).require_weights()
    cfg = run.config()
    config = to_dict(cfg)
    circuits_dir = run.circuits_dir
    bridges, steering = _bridge_view(run)
    return RunView(run=run, label=_unique_label(run_dir, taken), kind=cfg.sparsity.kind, bridges=bridges,
                   steering=steering,
                   summary=run.summary(), config=config, metrics=run.metric_records(),
                   scores=load_or_evaluate_run(run_dir, progress=progress),
                   prune_summary=PruneAllSummary.load(circuits_dir) if (circuits_dir / SUMMARY_FILE).is_file() else None,
                   weights_sha256=run.weights_sha256())


def _circuit_entry(directory: Path) -> CircuitEntry:
    validation = Validation.load(directory) if (directory / VALIDATION_FILE).is_file() else None
    return CircuitEntry(directory, load_circuit(directory), validation)


def attach_circuits(runs: list[RunView], circuit_dirs: list[Path]) -> None:
    """Given circuit directories go to the run whose weights they were pruned from; with none given,
    each run shows the circuits under RUN_DIR/circuits."""
    if not circuit_dirs:
        for run in runs:
            root = run.run.circuits_dir
            for d in sorted(root.glob("*/circuit.json")) if root.is_dir() else []:
                entry = _circuit_entry(d.parent)
                if entry.circuit.model_sha256 == run.weights_sha256:
                    run.circuits.append(entry)
        return
    by_sha = {run.weights_sha256: run for run in runs}
    for d in circuit_dirs:
        if not (d / "circuit.json").is_file():
            raise UserError(f"{d}: no circuit.json; pass directories written by `sparse-circuits prune`")
        entry = _circuit_entry(d)
        run = by_sha.get(entry.circuit.model_sha256)
        if run is None:
            raise UserError(f"{d}: circuit was pruned from {entry.circuit.model_dir}, which is not one of the "
                            "--model runs; add that run with --model")
        run.circuits.append(entry)


# -- circuit pages ----------------------------------------------------------------------------

def _token_texts(tokenizer: Tokenizer, ids: set[int]) -> dict[str, str]:
    return {str(i): tokenizer.decode([i], skip_special_tokens=False) for i in sorted(ids)}


def _collect_ids(obj, ids: set[int]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "tokens" and isinstance(v, list):
                ids.update(v)
            elif k == "token" and isinstance(v, int):
                ids.add(v)
            else:
                _collect_ids(v, ids)
    elif isinstance(obj, list):
        for v in obj:
            _collect_ids(v, ids)


def pretraining_activations(model: GPT, windows: torch.Tensor, entries: list[CircuitEntry]) -> dict[str, torch.Tensor]:
    """Whole-model activations (N, T) on the snippet windows of every node of any of a run's
    circuits, in one pass over the windows."""
    nodes = list({str(n): n for e in entries for n in e.circuit.nodes}.values())
    if not nodes:
        return {}
    acts = analysis.record_nodes(model, windows, nodes)
    return {str(n): acts[..., j] for j, n in enumerate(nodes)}


def circuit_page_data(model: GPT, tokenizer: Tokenizer, run: RunView, entry: CircuitEntry,
                      windows: torch.Tensor, pretrain: dict[str, torch.Tensor]) -> dict:
    c = entry.circuit
    task = get_task(c.task)
    nodes = c.nodes
    ds = task.build(tokenizer, Split.TEST, PAGE_PAIRS, c.sample.seed)
    tt = TaskTensors.of(ds, model, tokenizer)
    pairs = analysis.pair_activations(model, c, tt, nodes) if nodes else {}
    drift = entry.validation.role_drift.per_node if entry.validation else {}
    panels = {}
    for node in nodes:
        key = str(node)
        panels[key] = {"snippets": analysis.snippets(pretrain[key], windows), "pairs": pairs[key],
                       "writers": analysis.token_writers(model, node, tokenizer), "role_drift": drift.get(key),
                       "tau": float(c.tau[node.site][node.index]) if node.site in c.tau else None,
                       "head": (node.index // model.cfg.d_head) if node.location.head_channel else None}
    data = {
        "model": {"label": run.label, "kind": run.kind.value, "run_dir": str(run.run.dir), "n_layer": model.cfg.n_layer,
                  "d_head": model.cfg.d_head},
        "task": {"name": task.name, "description": task.description, "candidates": list(task.candidates),
                 "examples": [{"prompt": e.prompt, "correct": e.correct, "wrong": e.wrong}
                              for e in ds.examples[:2 * analysis.PAIR_EXAMPLES]]},
        "circuit": {"num_nodes": c.num_nodes, "num_edges": c.num_edges, "loss": c.loss,
                    "loss_calibrated": c.loss_calibrated, "target_loss": c.target_loss, "ablation": c.ablation.value,
                    "hyperparameters": c.config.as_dict(), "seconds": c.seconds, "directory": str(entry.directory)},
        "validation": entry.validation.as_dict() if entry.validation else None,
        "locations": [loc.value for loc in NodeLocation],
        "nodes": [str(n) for n in nodes],
        "edges": [[str(e.src), str(e.dst), e.weight] for e in c.edges],
        "residual_links": [[str(e.src), str(e.dst)] for e in c.residual_links],
        "qk_pairs": [[str(q), str(k)] for q, k in c.qk_pairs],
        "panels": panels,
        "heads": analysis.head_patterns(model, c, tt, nodes),
        "probes": analysis.probe_accuracies(model, c, tokenizer),
        "snippet_source": f"{windows.shape[0]} held-out windows of {windows.shape[1]} tokens "
                          f"(validation split of {run.config['data_dir']})",
    }
    ids: set[int] = set()
    _collect_ids(data, ids)
    data["vocab"] = _token_texts(tokenizer, ids)
    return data


# -- rendering --------------------------------------------------------------------------------

def _task_rows(runs: list[RunView]) -> list[dict]:
    rows = []
    names = [s.task for s in runs[0].scores.scores] if runs else []
    for name in names:
        task = get_task(name)
        per_run = []
        for run in runs:
            score = run.scores.by_task().get(name)
            circuit = next((e for e in run.circuits if e.circuit.task == name), None)
            per_run.append({"score": score.as_dict() if score else None, "page": circuit.page if circuit else None})
        rows.append({"name": name, "description": task.description, "candidates": task.candidates,
                     "control": task.control, "runs": per_run})
    return rows


def _circuit_rows(runs: list[RunView]) -> list[dict]:
    rows = []
    for run in runs:
        shown = set()
        for e in run.circuits:
            shown.add(e.circuit.task)
            v = e.validation
            rows.append({"run": run.label, "kind": run.kind.value, "task": e.circuit.task, "page": e.page,
                         "nodes": e.circuit.num_nodes, "edges": e.circuit.num_edges,
                         "residual": len(e.circuit.residual_links), "qk": len(e.circuit.qk_pairs),
                         "loss": e.circuit.loss, "target": e.circuit.target_loss,
                         "calibrated": e.circuit.loss_calibrated, "ablation": e.circuit.ablation.value,
                         "full": v.full_model.loss if v else None,
                         "test": v.sufficiency.loss if v else None,
                         "test_acc": v.sufficiency.accuracy if v else None,
                         "necessity": v.necessity.loss if v else None,
                         "random": v.random_circuits.mean_loss if v else None,
                         "drift": v.role_drift.mean if v else None, "seconds": e.circuit.seconds,
                         "fragile": bool(v and v.complement and v.complement.fragile),
                         "note": None})
        skipped, unlearned = [], []
        for task, r in (run.prune_summary.tasks if run.prune_summary else {}).items():
            if task in shown or r.has_circuit:
                continue
            if r.status == TaskStatus.NOT_ATTEMPTED:
                skipped.append(f"{task} ({r.full_model_loss:.2f})")
            elif r.status == TaskStatus.NOT_LEARNED:
                unlearned.append(f"{task} ({r.test_accuracy:.2f})")
            else:
                rows.append({"run": run.label, "kind": run.kind.value, "task": task, "page": None,
                             "note": r.error or "no circuit"})
        if unlearned:
            rows.append({"run": run.label, "kind": run.kind.value, "task": f"{len(unlearned)} tasks", "page": None,
                         "note": f"not attempted, the model's test accuracy is below {run.prune_summary.min_accuracy}: "
                                 + ", ".join(unlearned)})
        if skipped:
            limit = run.prune_summary.max_full_loss
            rows.append({"run": run.label, "kind": run.kind.value, "task": f"{len(skipped)} tasks", "page": None,
                         "note": f"not attempted, the whole model's task loss is above {limit}: " + ", ".join(skipped)})
    return rows


def _sizes_plot(runs: list[RunView]) -> str | None:
    tasks = sorted({e.circuit.task for run in runs for e in run.circuits if not get_task(e.circuit.task).control})
    if not tasks:
        return None
    models = [{"label": run.label, "kind": run.kind.value,
               "edges": {e.circuit.task: e.circuit.num_edges for e in run.circuits},
               "nodes": {e.circuit.task: e.circuit.num_nodes for e in run.circuits}} for run in runs]
    return plots.circuit_sizes(tasks, models)


@dataclass(frozen=True)
class ReportSite:
    """What `build_report` wrote: every page's size in bytes, keyed by its path under the site."""
    pages: dict[str, int]
    seconds: float
    index: Path

    @property
    def total_bytes(self) -> int:
        return sum(self.pages.values())


def build_report(model_dirs: list[str | os.PathLike], circuit_dirs: list[str | os.PathLike], out_dir: str | os.PathLike,
                 progress: bool = True, snippet_windows: int = SNIPPET_WINDOWS, log=print,
                 sweep_dir: str | os.PathLike | None = None) -> ReportSite:
    """Write the site. With `sweep_dir`, the index also
    shows that sweep's frontier (report/frontier.py)."""
    start = time.perf_counter()
    if not model_dirs:
        raise UserError("report: pass at least one --model RUN_DIR")
    if snippet_windows < 1:
        raise UserError(f"report: --windows must be >= 1 (held-out windows searched for snippets), got {snippet_windows}")
    out = Path(out_dir)
    frontier = None
    if sweep_dir is not None:  # first: a missing or damaged sweep fails before any work
        from .frontier import figure_pngs, section_context
        from ..sweep.frontier import load_frontier

        fr = load_frontier(sweep_dir)
        frontier = section_context(fr, figure_pngs(fr)) | {"sweep_dir": str(sweep_dir)}
    taken: set[str] = set()
    runs = [load_run_view(Path(d), taken, progress) for d in model_dirs]
    attach_circuits(runs, [Path(d) for d in circuit_dirs])
    env = environment()
    pages: dict[str, int] = {}

    def write(rel: str, text: str) -> None:
        write_text(out / rel, text)
        os.chmod(out / rel, 0o644)  # a site is for reading: the atomic write's temp file was private
        pages[rel] = len(text.encode("utf-8"))

    total = sum(len(r.circuits) for r in runs)
    bar = tqdm(total=total, desc="report", unit="circuit", disable=not progress or total == 0, leave=False)
    for run in runs:
        run.circuits.sort(key=lambda e: e.circuit.task)
        if not run.circuits:
            continue
        model, cfg = run.run.load_model()
        tokenizer = run.run.tokenizer()
        windows = analysis.pretraining_windows(cfg.data_dir, cfg.model.context, snippet_windows)
        pretrain = pretraining_activations(model, windows, run.circuits)
        for entry in run.circuits:
            entry.page = f"circuits/{run.label}--{entry.circuit.task}.html"
            data = circuit_page_data(model, tokenizer, run, entry, windows, pretrain)
            c = entry.circuit
            loss_plot = plots.loss_vs_kept([list(p) for p in c.loss_curve], c.target_loss, c.num_nodes, c.loss)
            f = entry.validation.faithfulness if entry.validation else None
            faithfulness_plot = plots.faithfulness_curve(f.points, f.cpr, f.cmd) if f else None
            write(entry.page, env.get_template("circuit.html.j2").render(
                title=f"{c.task} · {run.label}", data=data, loss_plot=loss_plot, faithfulness_plot=faithfulness_plot,
                run=run, chance=CHANCE_LOSS))
            bar.update()
    bar.close()
    curves = plots.training_curves([{"label": r.label, "kind": r.kind.value, "metrics": r.metrics,
                                     "baselines": r.summary.baselines_val_loss} for r in runs])
    write("index.html", env.get_template("index.html.j2").render(
        title="sparse-circuits report", runs=runs, curves=curves, sizes=_sizes_plot(runs), tasks=_task_rows(runs),
        circuits=_circuit_rows(runs), chance=CHANCE_LOSS, frontier=frontier,
        configs={r.label: json.dumps(r.config, indent=1) for r in runs}))
    seconds = time.perf_counter() - start
    log(f"report: {len(pages)} pages, {sum(pages.values()) / 1e6:.2f} MB in {seconds:.1f} s -> {out / 'index.html'}")
    return ReportSite(pages, seconds, out / "index.html")
