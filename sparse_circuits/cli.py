"""`sparse-circuits`: a thin command line over the Python API."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from .circuits.ablations import ablation_choices
from .config import Precision, Preset, resolve_run_config, to_dict
from .data.prepare import DEFAULT_SOURCES
from .errors import UserError
from .fileio import read_json


def _user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:  # a path that cannot be written or read: a parent that is a file, a full disk, ...
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or e}; check the path (--out, --json) and the disk", err=True)
            sys.exit(2)
    return wrapper


def _task_files(fn):
    """`--task-file FILE.jsonl` (repeatable): tasks from data (tasks/from_file.py), registered before the
    command runs so that it finds them by name like the built-in ones."""
    @functools.wraps(fn)
    def wrapper(*args, task_files=(), **kwargs):
        if task_files:
            from .tasks.from_file import use_task_files

            use_task_files(list(task_files))
        return fn(*args, **kwargs)
    return click.option("--task-file", "task_files", multiple=True, type=click.Path(dir_okay=False),
                        help="a JSONL file of minimal pairs, used as a task named after the file "
                             "(repeatable; docs/tasks.md)")(_user_errors(wrapper))


def _check_output_path(path, option: str, is_dir: bool = False) -> None:
    """Fail before any work when `path` cannot be written: it (for a directory) or its nearest
    existing ancestor is not a directory."""
    path = Path(path)
    if is_dir and path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: exists and is not a directory; choose another path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is not a directory; choose another path")


@click.group()
def main() -> None:
    """Weight-sparse transformers with interpretable circuits."""


@main.command()
@click.option("--corpus", "sources", multiple=True, default=DEFAULT_SOURCES, show_default=True,
              help="repeatable: 'stdlib', a directory or glob of .py files, a .txt/.jsonl file, or 'synthetic' "
                   "(generated simple programs)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="data directory to write")
@click.option("--vocab-size", default=2048, show_default=True)
@click.option("--val-frac", default=0.05, show_default=True, help="fraction of files held out for validation")
@click.option("--seed", default=0, show_default=True, help="seed of the by-file split")
@click.option("--synthetic-share", type=float,
              help="share of the training tokens that are generated (default 0.5 next to real code)")
@click.option("--synthetic-tokens", type=int, help="training tokens of generated code (default 10M when alone)")
@click.option("--synthetic-files", type=int, help="number of generated programs")
@click.option("--synthetic-seed", default=0, show_default=True, help="seed of the program generator")
@click.option("--synthetic-version", type=int, default=0,
              help="version of the program generator: 2 coherent typed programs (the default), 1 the older ones")
@click.option("--contamination/--no-contamination", default=True, show_default=True,
              help="write contamination.json: task test prompts found verbatim in the training tokens")
@click.option("--tokenizer", type=click.Path(dir_okay=False),
              help="encode with this tokenizer.json instead of training one (e.g. an imported model's)")
@click.option("--force", is_flag=True, help="replace a data directory made with other settings or another corpus")
@_user_errors
def data(sources, out_dir, vocab_size, val_frac, seed, synthetic_share, synthetic_tokens, synthetic_files,
         synthetic_seed, synthetic_version, contamination, tokenizer, force) -> None:
    """Read a corpus (real code, generated programs, or a mix), split it by file, train the BPE
    tokenizer (or take --tokenizer) and write token arrays."""
    from .data import prepare_data

    _check_output_path(out_dir, "--out", is_dir=True)
    prepare_data(list(sources), out_dir, vocab_size=vocab_size, val_frac=val_frac, seed=seed,
                 synthetic_share=synthetic_share, synthetic_tokens=synthetic_tokens,
                 synthetic_files=synthetic_files, synthetic_seed=synthetic_seed, tokenizer=tokenizer,
                 synthetic_version=synthetic_version, overwrite=force)
    if contamination:
        from .tasks.contamination import contamination_report

        contamination_report(out_dir)


def _training_options(fn):
    options = [
        click.option("--data", "data_dir", type=click.Path(file_okay=False), help="data directory from `data`"),
        click.option("--preset", type=click.Choice([p.value for p in Preset]), default="micro", show_default=True),
        click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="run directory"),
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="JSON file of config overrides, e.g. {\"model\": {\"n_layer\": 3}}"),
        click.option("--nonzero-frac", type=float, help="target fraction of nonzero weights per tensor"),
        click.option("--dense", is_flag=True, help="train the dense baseline (nonzero fraction 1)"),
        click.option("--steps", type=int),
        click.option("--lr", type=float),
        click.option("--batch-size", type=int),
        click.option("--seed", type=int),
        click.option("--device", help="cpu, cuda, cuda:1, ..."),
        click.option("--threads", type=int,
                     help="CPU threads (0: torch's default, one per core); 1 degrades best while other work runs"),
        click.option("--precision", type=click.Choice([p.value for p in Precision]),
                     help="dtype of the matrix products (weights, optimizer and checkpoints stay fp32)"),
        click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint"),
        click.option("--resume-if-exists", is_flag=True,
                     help="resume when --out already holds a run, start one otherwise (for scripts)"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _training_config(data_dir, preset, out_dir, config_file, nonzero_frac, dense, steps, lr, batch_size, seed,
                     device, threads, precision, resume, resume_if_exists, model_defaults: dict | None = None):
    """(RunConfig, resume) from the training options: preset, --config overrides, then flags; on
    --resume the saved config with the given options laid over it."""
    from .config import merge_overrides, run_config_from_dict, to_dict
    from .data import DataMeta
    from .runs import Run

    resume = resume or (resume_if_exists and Run(out_dir).has_config())
    if not resume and not data_dir:
        raise UserError("train: --data DATA_DIR is required (make one with `sparse-circuits data`)")
    overrides = read_json(config_file, "config file") if config_file else {}
    if not isinstance(overrides, dict):
        raise UserError(f"{config_file}: must hold a JSON object of config sections")
    if dense and nonzero_frac is not None:
        raise UserError("train: pass either --dense or --nonzero-frac, not both")
    sparsity = overrides.setdefault("sparsity", {})
    trainer = overrides.setdefault("train", {})
    if dense:
        sparsity["nonzero_frac"] = 1.0
    for section, key, value in ((sparsity, "nonzero_frac", nonzero_frac), (trainer, "steps", steps),
                                (trainer, "lr", lr), (trainer, "batch_size", batch_size),
                                (trainer, "seed", seed), (trainer, "device", device),
                                (trainer, "threads", threads), (trainer, "precision", precision)):
        if value is not None:
            section[key] = value
    if data_dir:
        overrides["data_dir"] = str(Path(data_dir))
        overrides.setdefault("model", {}).setdefault("vocab_size", DataMeta.load(data_dir).vocab_size)
    for key, value in (model_defaults or {}).items():
        overrides.setdefault("model", {}).setdefault(key, value)
    if resume:  # the saved config, with what was given on the command line (checked by train)
        where = f"{out_dir}/config.json with the given options"
        return run_config_from_dict(merge_overrides(to_dict(Run(out_dir).config()), overrides), where), True
    return resolve_run_config(preset, overrides, where=config_file or "config"), False


@main.command()
@_training_options
@_user_errors
def train(data_dir, preset, out_dir, config_file, nonzero_frac, dense, steps, lr, batch_size, seed, device,
          threads, precision, resume, resume_if_exists) -> None:
    """Train a weight-sparse GPT (or its dense baseline).

    With --resume, the run continues from its last checkpoint with its saved config; --steps
    (to extend it), --lr, --device and --threads may change it (recorded in RUN_DIR/config_history.jsonl),
    any other option that differs is an error."""
    from .train import train as run_training

    cfg, resume = _training_config(data_dir, preset, out_dir, config_file, nonzero_frac, dense, steps, lr,
                                   batch_size, seed, device, threads, precision, resume, resume_if_exists)
    final = run_training(cfg, out_dir, resume=resume)
    summary = {k: final[k] for k in ("step", "train_loss", "val_loss") if k in final}
    click.echo(f"trained {out_dir}: " + json.dumps(summary))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_user_errors
def info(run_dir: str, as_json: bool) -> None:
    """Final losses, wall time and per-tensor nonzero fractions of a training run."""
    from .runs import Run

    summary = Run(run_dir).summary()
    s = summary.as_dict()
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    click.echo(f"{s['run']}: preset {s['preset']}, {s['shape']}, target nonzero fraction "
               f"{s['nonzero_frac_target']:.4g}")
    click.echo(f"step {s['step']}/{s['steps']}, {fmt(s['tokens'], ',')} tokens, "
               f"{fmt(s['elapsed_s'], '.0f')} s; train loss {fmt(s['train_loss'], '.3f')}, "
               f"validation loss {fmt(s['val_loss'], '.3f')}")
    for name, value in s["baselines_val_loss"].items():
        click.echo(f"  {name} model validation loss: {fmt(value, '.3f')}")
    if s["nonzero_frac"]:
        click.echo(f"{'tensor':<28} {'nonzero':>8} {'/target':>8}")
        for name, frac in s["nonzero_frac"].items():
            click.echo(f"{name:<28} {frac:>8.4f} {frac / s['nonzero_frac_target']:>8.2f}")


@main.group()
def tasks() -> None:
    """The Python next-token tasks: list, show and evaluate."""


@tasks.command("list")
@_task_files
def tasks_list() -> None:
    """Names, one-line descriptions and candidates of every task."""
    from .tasks import all_tasks
    from .tasks.registry import diagnostic_tasks

    for t in all_tasks() + diagnostic_tasks():
        cands = " / ".join(repr(c) for c in t.candidates)
        click.echo(f"{t.name:<28} {cands:<34} {t.description}")


def _tokenizer_for(model_dir: str | None, tokenizer_path: str | None):
    from .data import load_tokenizer
    from .runs import Run

    if tokenizer_path:
        return load_tokenizer(tokenizer_path)
    if model_dir:
        return Run(model_dir).tokenizer()
    raise UserError("give --model RUN_DIR or --tokenizer FILE: token boundaries depend on the tokenizer")


@tasks.command("show")
@click.argument("name")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="run directory (for its tokenizer)")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(dir_okay=False), help="a tokenizer.json")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("-n", "n_pairs", default=3, show_default=True, help="pairs to show")
@click.option("--seed", default=0, show_default=True)
@_user_errors
@_task_files
def tasks_show(name, model_dir, tokenizer_path, split, n_pairs, seed) -> None:
    """A few rendered pairs, with the prompt's last tokens and the two evaluated tokens."""
    from .tasks import get_task

    task = get_task(name)
    tok = _tokenizer_for(model_dir, tokenizer_path)
    ds = task.build(tok, split, n_pairs, seed)
    click.echo(f"{task.name}: {task.description}\ncandidates {' / '.join(repr(c) for c in task.candidates)}; split {split}, "
               f"seed {seed}; {ds.rejected} draws rejected by the token boundary rule\n")
    for i, ex in enumerate(ds.examples):
        tail = " ".join(repr(tok.decode([t])) for t in ds.prompt_tokens[i][-8:])
        label = "AB"[ex.label]
        click.echo(f"-- pair {ex.pair}, prompt {label} " + "-" * 40)
        click.echo(ex.prompt)
        click.echo(f"   tokens: ... {tail}  |  correct {tok.decode([ds.correct_token[i]])!r}, "
                   f"wrong {tok.decode([ds.wrong_token[i]])!r}   (ending {ex.ending!r})")


@tasks.command("eval")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--pairs", "n_pairs", default=128, show_default=True, help="pairs per task")
@click.option("--seed", default=0, show_default=True)
@click.option("--task", "names", multiple=True, help="only these tasks (repeatable)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="also write the scores as JSON")
@click.option("--step", type=int, help="evaluate the run's checkpoint at this step instead of its final weights")
@_user_errors
@_task_files
def tasks_eval(model_dir, split, n_pairs, seed, names, json_out, step) -> None:
    """Task loss, accuracy and logit difference of a model on every task, with baselines."""
    from .fileio import write_json
    from .tasks.evaluate import CHANCE_LOSS, evaluate_run

    if json_out:
        _check_output_path(json_out, "--json")
    result = evaluate_run(model_dir, split, n_pairs, seed, list(names) or None, step)
    click.echo(f"{model_dir}: {split} split, {n_pairs} pairs per task; chance: loss {CHANCE_LOSS:.3f}, accuracy 0.50")
    click.echo(f"{'task':<28} {'loss':>7} {'acc':>6} {'logit diff':>10} {'bigram loss':>11} {'bigram acc':>10}")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    for s in result.scores:
        if s.error:
            click.echo(f"{s.task:<28} not expressible with this tokenizer: {s.error}")
            continue
        click.echo(f"{s.task:<28} {s.loss:>7.3f} {s.accuracy:>6.2f} {s.logit_diff:>10.2f} "
                   f"{fmt(s.bigram_loss, '.3f'):>11} {fmt(s.bigram_accuracy, '.2f'):>10}")
    if json_out:
        write_json(json_out, result.as_dict())


@tasks.command("corpus-stats")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False))
@_user_errors
def tasks_corpus_stats(data_dir) -> None:
    """How often each task's deciding idiom occurs in a data directory's training text."""
    from .data import TokenData, load_tokenizer
    from .data.meta import TOKENIZER_FILE
    from .tasks import all_tasks
    from .tasks.evaluate import corpus_pattern_counts

    data = TokenData(data_dir)
    text = load_tokenizer(Path(data_dir) / TOKENIZER_FILE).decode(data.train.tolist(), skip_special_tokens=False)
    click.echo(f"{'task':<28} {'class A':>9} {'class B':>9}")
    fmt = lambda v: "-" if v is None else f"{v:,}"
    for name, (a, b) in corpus_pattern_counts(all_tasks(), text).items():
        click.echo(f"{name:<28} {fmt(a):>9} {fmt(b):>9}")


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--batches", default=64, show_default=True, help="batches of 32 pretraining windows")
@_user_errors
def means(model_dir: str, batches: int) -> None:
    """Mean activation of every node over pretraining tokens (cached in RUN_DIR/means.safetensors)."""
    from .circuits.means import load_or_compute_means
    from .runs import Run

    model, cfg = Run(model_dir).load_model()
    m = load_or_compute_means(model, model_dir, cfg.data_dir, n_batches=batches)
    click.echo(f"{model_dir}/means.safetensors: {len(m)} sites, {sum(v.numel() for v in m.values())} nodes")


def _prune_options(fn):
    options = [
        click.option("--target-loss", type=float, help="task loss the circuit must reach (default 0.15)"),
        click.option("--ablation", type=click.Choice(ablation_choices()),
                     help="what nodes outside the circuit are set to (default mean-pretrain)"),
        click.option("--freeze-norms", is_flag=True, default=None, help="fix norm scales to the full model's"),
        click.option("--tie-qk", is_flag=True, default=None, help="one mask for each query/key channel pair"),
        click.option("--steps", type=int, help="mask optimisation steps per run"),
        click.option("--budget", type=int, help="pruning runs per task (hyper-parameter search)"),
        click.option("--pairs", "n_pairs", type=int, help="task pairs used for pruning and validation"),
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="JSON object of any PruneConfig field"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _prune_config(target_loss, ablation, freeze_norms, tie_qk, steps, config_file):
    from .circuits.prune import PruneConfig

    data = read_json(config_file, "prune config") if config_file else {}
    for key, value in (("target_loss", target_loss), ("ablation", ablation), ("freeze_norms", freeze_norms),
                       ("tie_qk", tie_qk), ("steps", steps)):
        if value is not None:
            data[key] = value
    return PruneConfig.from_dict(data, config_file or "prune options")


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--task", "task_name", required=True, help="task name (`sparse-circuits tasks list`)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="circuit directory")
@click.option("--seeds", default=1, show_default=True,
              help="prune with this many mask seeds (OUT/seed-S/ each) and report how much they agree")
@_prune_options
@_user_errors
@_task_files
def prune(model_dir, task_name, out_dir, seeds, target_loss, ablation, freeze_norms, tie_qk, steps, budget, n_pairs,
          config_file) -> None:
    """Prune a model to the smallest circuit that does one task."""
    from .circuits.api import DEFAULT_BUDGET, PRUNE_PAIRS, LoadedRun, check_search_size, prune_task
    from .circuits.backups import check_seeds, prune_seeds, task_pruner

    cfg = _prune_config(target_loss, ablation, freeze_norms, tie_qk, steps, config_file)
    budget, n_pairs = DEFAULT_BUDGET if budget is None else budget, PRUNE_PAIRS if n_pairs is None else n_pairs
    check_seeds(seeds)
    check_search_size(budget, n_pairs)
    if seeds > 1:
        circuits, a = prune_seeds(task_pruner(LoadedRun.load(model_dir), task_name, cfg, budget, n_pairs), seeds,
                                  out_dir)
        for s, c in circuits.items():
            click.echo(f"seed {s}: " + (f"{c.num_nodes} nodes, {c.num_edges} edges" if c else "no circuit at the target"))
        jm = "-" if a.jaccard_mean is None else f"{a.jaccard_mean:.2f} (min {a.jaccard_min:.2f})"
        click.echo(f"{task_name}: node-set agreement (Jaccard, pairs of seeds) {jm}; {len(a.shared)} nodes kept by "
                   f"every seed, {a.union} by some -> {out_dir}/seeds.json")
        return
    c, runs = prune_task(model_dir, task_name, out_dir, cfg, budget, n_pairs)
    click.echo(f"{task_name}: {c.num_nodes} nodes, {c.num_edges} edges (+{len(c.residual_links)} residual links, "
               f"{len(c.qk_pairs)} query-key pairs); loss {c.loss:.3f}, calibrated {c.loss_calibrated:.3f}; "
               f"{len(runs)} runs in {c.seconds:.0f} s -> {out_dir}")


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--task", "task_name", required=True, help="task name (`sparse-circuits tasks list`)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="directory for the rounds' circuits and backups.json")
@click.option("--seeds", default=3, show_default=True, help="pruning seeds per round")
@click.option("--max-rounds", default=20, show_default=True)
@_prune_options
@_user_errors
@_task_files
def backups(model_dir, task_name, out_dir, seeds, max_rounds, target_loss, ablation, freeze_norms, tie_qk, steps,
            budget, n_pairs, config_file) -> None:
    """Backup circuits: prune with several seeds, forbid the node their circuits share most, and
    prune again until no seed reaches the target (circuits/backups.py)."""
    from .circuits.api import DEFAULT_BUDGET, PRUNE_PAIRS, LoadedRun, check_search_size
    from .circuits.backups import backup_analysis, check_seeds, task_pruner

    cfg = _prune_config(target_loss, ablation, freeze_norms, tie_qk, steps, config_file)
    budget, n_pairs = DEFAULT_BUDGET if budget is None else budget, PRUNE_PAIRS if n_pairs is None else n_pairs
    check_seeds(seeds)
    check_search_size(budget, n_pairs)
    _check_output_path(out_dir, "--out", is_dir=True)
    loaded = LoadedRun.load(model_dir)
    a = backup_analysis(task_pruner(loaded, task_name, cfg, budget, n_pairs, progress=False), seeds, out_dir,
                        max_rounds, log=click.echo, about={"task": task_name, "model": str(model_dir)})
    click.echo(f"{task_name}: {a.backups} backup circuit(s) after the first; stopped: {a.stopped}; core (kept by "
               f"every seed in round 0): {', '.join(a.core) or 'none'} -> {out_dir}/backups.json")


@main.command("prune-all")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="default: RUN_DIR/circuits")
@click.option("--reuse", is_flag=True, help="keep tasks an earlier prune-all finished with the same weights and settings")
@click.option("--min-accuracy", type=float,
              help="attempt only tasks the model does at least this well on the test split (0.9: the learned ones)")
@click.option("--task", "names", multiple=True, help="only these tasks (repeatable; default: every task)")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="tasks pruned at once, one process and one thread each (a CPU with cores to spare)")
@_prune_options
@_user_errors
@_task_files
def prune_all_cmd(model_dir, out_dir, reuse, min_accuracy, names, jobs, target_loss, ablation, freeze_norms, tie_qk,
                  steps, budget, n_pairs, config_file) -> None:
    """Prune and validate every task; print the geometric mean of edge counts."""
    from .circuits.api import DEFAULT_BUDGET, PRUNE_PAIRS, prune_all
    from .circuits.summary import TaskStatus
    from .runs import Run

    from .tasks import all_tasks, get_task

    cfg = _prune_config(target_loss, ablation, freeze_norms, tie_qk, steps, config_file)
    suite = {t.name for t in all_tasks()}
    for name in names:  # an unknown name fails before anything is loaded
        if get_task(name).name not in suite:
            raise UserError(f"prune-all --task {name}: a diagnostic probe, not a task of the suite; "
                            f"use `sparse-circuits prune --task {name}`")
    out = out_dir or str(Run(model_dir).circuits_dir)
    s = prune_all(model_dir, out, cfg, DEFAULT_BUDGET if budget is None else budget,
                  PRUNE_PAIRS if n_pairs is None else n_pairs, reuse=reuse, min_accuracy=min_accuracy,
                  only=list(names) or None, jobs=jobs)
    click.echo(f"{'task':<28} {'nodes':>6} {'edges':>6} {'loss':>6} {'test':>6} {'necess.':>7} {'random':>6}")
    for name, r in s.tasks.items():
        if not r.has_circuit:
            reason = (f"not attempted: whole-model loss {r.full_model_loss:.3f}" if r.status == TaskStatus.NOT_ATTEMPTED
                      else f"not attempted: test accuracy {r.test_accuracy:.3f}" if r.status == TaskStatus.NOT_LEARNED
                      else "not expressible with this tokenizer" if r.status == TaskStatus.NOT_EXPRESSIBLE
                      else "no circuit at the target")
            click.echo(f"{name:<28} {'-':>6} {'-':>6}  {reason}")
            continue
        mark = "  bigram-decided" if r.bigram_decided else ""
        click.echo(f"{name:<28} {r.num_nodes:>6} {r.num_edges:>6} {r.loss:>6.3f} {r.test_loss:>6.3f} "
                   f"{r.necessity_loss:>7.3f} {r.random_loss:>6.3f}{mark}")
    gm = s.geomean_edges
    decided = s.bigram_decided_tasks
    left_out = f", leaving out the bigram-decided {', '.join(decided)}" if decided else ""
    click.echo(f"geometric mean of edges over {len(s.geomean_tasks)} of {s.tasks_with_circuit} tasks with a "
               f"circuit{left_out}: " + (f"{gm:.1f}" if gm is not None else "-") + f"  ({out}/summary.json)")


@main.command("validate")
@click.argument("circuit_dir", type=click.Path(file_okay=False))
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="default: the circuit's own model")
@click.option("--pairs", "n_pairs", default=128, show_default=True)
@click.option("--random", "n_random", default=10, show_default=True, help="random circuits to compare")
@_user_errors
@_task_files
def validate_cmd(circuit_dir, model_dir, n_pairs, n_random) -> None:
    """Faithfulness of a circuit on held-out pairs: sufficiency, necessity, controls, role drift."""
    from .circuits.api import validate_circuit

    v = validate_circuit(circuit_dir, model_dir, n_pairs, n_random)
    click.echo(f"{circuit_dir} on the {v.split.value} split (task loss in nats; chance 0.693):")
    click.echo(f"  full model       loss {v.full_model.loss:.3f}  accuracy {v.full_model.accuracy:.2f}")
    click.echo(f"  circuit alone    loss {v.sufficiency.loss:.3f}  accuracy {v.sufficiency.accuracy:.2f}  (sufficiency)")
    click.echo(f"  circuit ablated  loss {v.necessity.loss:.3f}  accuracy {v.necessity.accuracy:.2f}  (necessity)")
    r = v.random_circuits
    click.echo(f"  {r.n} random circuits of the same size: mean loss {r.mean_loss:.3f}, best {r.min_loss:.3f}")
    click.echo("  ablation sensitivity: " + ", ".join(f"{k.value} {l:.3f}" for k, l in v.ablation_sensitivity.items()))
    d = v.role_drift
    if d.mean is not None:
        click.echo(f"  role drift: activation correlation pruned vs full, mean {d.mean:.3f}, min {d.min:.3f}")
    c = v.complement
    if c is not None:
        restored = ", ".join(f"{r.fraction:.0%}: mean {r.mean_loss:.3f}, worst {r.worst_loss:.3f}" for r in c.random)
        click.echo(f"  the rest restored to their own values ({restored}); adversary ({c.adversary_size} nodes) "
                   f"{c.adversary_loss:.3f}")
        if c.fragile:
            click.echo(f"  FRAGILE: the circuit keeps the task only with the rest ablated (worst loss "
                       f"{c.worst_loss:.3f} > {c.threshold:.3f})")


@main.command("export-circuit")
@click.argument("circuit_dir", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["mib", "graph"]), required=True,
              help="mib: MIB's circuit-localization JSON; graph: Neuronpedia / circuit-tracer attribution graph")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="JSON file to write")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="default: the circuit's own model")
@click.option("--pairs", "n_pairs", default=128, show_default=True, help="test pairs of the faithfulness curve")
@_user_errors
@_task_files
def export_circuit_cmd(circuit_dir, fmt, out_file, model_dir, n_pairs) -> None:
    """Write a circuit in another tool's format, with its faithfulness curve (circuits/export.py)."""
    from .circuits.api import export_circuit
    from .circuits.export import ExportFormat

    if n_pairs < 1:
        raise UserError(f"export-circuit: --pairs must be >= 1, got {n_pairs}")
    _check_output_path(out_file, "--out")
    data = export_circuit(circuit_dir, ExportFormat(fmt), out_file, model_dir, n_pairs)
    f = data["faithfulness"]
    size = (f"{len(data['links'])} links, {len(data['nodes'])} nodes" if fmt == "graph" else
            f"{sum(e['in_graph'] for e in data['edges'].values())} of {len(data['edges'])} component edges in the graph")
    click.echo(f"{circuit_dir} -> {out_file} ({fmt}: {size}); faithfulness CPR {f['cpr']:.3f}, CMD {f['cmd']:.3f}")


@main.command()
@click.option("--model", "model_dirs", multiple=True, required=True, type=click.Path(file_okay=False),
              help="run directory (repeat for several models, e.g. sparse and dense)")
@click.argument("circuit_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="site directory to write")
@click.option("--windows", type=int, help="held-out pretraining windows searched for snippets (default 256)")
@click.option("--sweep", "sweep_dir", type=click.Path(file_okay=False),
              help="also show the frontier of this sweep directory (`sparse-circuits sweep`)")
@_user_errors
@_task_files
def report(model_dirs, circuit_dirs, out_dir, windows, sweep_dir) -> None:
    """Write a static report site: models, tasks, circuits (default: every RUN_DIR/circuits/*)."""
    from .report import build_report
    from .report.site import SNIPPET_WINDOWS

    _check_output_path(out_dir, "--out", is_dir=True)
    build_report(list(model_dirs), list(circuit_dirs), out_dir, snippet_windows=SNIPPET_WINDOWS if windows is None else windows,
                 log=click.echo, sweep_dir=sweep_dir)


@main.command()
@click.option("--grid", "grid_spec", default="default", show_default=True,
              help="'default' (~8 h on 2 CPU cores), 'wide' (widths 128-512 at a fixed nonzero count, ~10 h), "
                   "'quick' (a minute, tiny models) or a grid JSON file")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="data directory from `data`")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="sweep directory")
@click.option("--device", help="train on this device (cpu, cuda, cuda:1, ...); pruning runs on the CPU")
@click.option("--shard", help="K/N: this process takes every N-th model from the K-th (one process per GPU)")
@click.option("--show", is_flag=True, help="print the grid's models and exit")
@click.option("--jobs", type=int, default=0, show_default=True,
              help="models trained, and a model's tasks pruned, side by side, one thread each (0: one per CPU core; "
                   "1: one at a time)")
@_user_errors
def sweep(grid_spec, data_dir, out_dir, device, shard, show, jobs) -> None:
    """Train a grid of sparse and dense models, prune every task each does, and write the table
    (OUT/sweep.json, OUT/sweep.csv). Re-running resumes; `frontier OUT` draws the figures."""
    from .sweep import Shard, load_grid, run_sweep

    grid = load_grid(grid_spec)
    if show:
        for spec in grid.models():
            click.echo(spec.name)
        return
    table = run_sweep(grid, data_dir, out_dir, device=device, shard=Shard.parse(shard) if shard else None,
                      log=click.echo, jobs=jobs)
    click.echo(f"{len(table.rows)} models -> {Path(out_dir) / 'sweep.csv'}; figures: sparse-circuits frontier {out_dir}")


@main.command()
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@_user_errors
def frontier(sweep_dir) -> None:
    """Draw a sweep's frontier: loss against circuit size, the same against width at a fixed number
    of nonzero weights, the dense/sparse ratio at matched loss, task loss against circuit size,
    circuits across training (SWEEP_DIR/frontier/)."""
    from .report.frontier import write_frontier

    result = write_frontier(sweep_dir, log=click.echo)
    for s in result.frontier.spread:
        ratio = "no ratio" if s.mean is None else f"{s.mean:.1f}x" + (f" +- {s.std:.1f}" if s.std is not None else "")
        click.echo(f"  width {s.width}, nonzero fraction {s.nonzero_frac:g}: dense/sparse at matched loss {ratio} "
                   f"({s.n} seeds with a ratio, {s.without_ratio} without)")
    for r in result.frontier.target_ratios:
        ratio = "no ratio" if r.ratio is None else f"{r.ratio:.1f}x"
        click.echo(f"  Fig. 2, seed {r.seed}, target {r.target_loss:g}: dense/sparse {ratio} over {len(r.tasks)} tasks")
    for s in result.frontier.series:
        steps = ", ".join(f"w{p.width} {p.loss_mean:.3f} / " + ("-" if p.geomean is None else f"{p.geomean:.1f}")
                          for p in s.points)
        click.echo(f"  ~{s.nonzero_params / 1000:.0f}k nonzero weights, loss / geomean edges by width: {steps}")


@main.command("circuit-history")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="a run directory with several kept checkpoints")
@click.option("--task", "task_name", required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="default: RUN_DIR/history/TASK")
@click.option("--at-step", "checkpoint_steps", type=int, multiple=True, help="only this checkpoint (repeatable)")
@_prune_options
@_user_errors
@_task_files
def circuit_history_cmd(model_dir, task_name, out_dir, checkpoint_steps, target_loss, ablation, freeze_norms, tie_qk,
                        steps, budget, n_pairs, config_file) -> None:
    """Prune one task at each kept checkpoint of a run: circuit size and task loss against tokens."""
    from .circuits.api import DEFAULT_BUDGET, PRUNE_PAIRS
    from .circuits.history import circuit_history

    cfg = _prune_config(target_loss, ablation, freeze_norms, tie_qk, steps, config_file)
    out = out_dir or str(Path(model_dir) / "history" / task_name)
    circuit_history(model_dir, task_name, out, cfg, DEFAULT_BUDGET if budget is None else budget, PRUNE_PAIRS if n_pairs is None else n_pairs,
                    steps=list(checkpoint_steps), log=click.echo)
    click.echo(f"-> {out}/history.json")


@main.command()
@click.argument("site_dir", type=click.Path(file_okay=False))
@click.option("--port", default=8000, show_default=True, help="port on 127.0.0.1 (0: any free port)")
@_user_errors
def view(site_dir, port) -> None:
    """Serve a report on 127.0.0.1 (local only) until interrupted."""
    from .report.serve import address, make_server

    if not 0 <= port <= 65535:
        raise UserError(f"view: --port must be between 0 and 65535 (0: any free port), got {port}")
    server = make_server(site_dir, port)
    click.echo(f"serving {site_dir} at {address(server)} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command()
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="directory for data, models, circuits and the report")
@click.option("--quick", is_flag=True, help="the same pipeline at the tiny scale (a few minutes; for smoke tests)")
@click.option("--wide", is_flag=True, help="the 2 x 128 `micro` models instead of 2 x 64 (about an hour on 2 cores)")
@click.option("--reference", is_flag=True,
              help="the reference setting: longer training of wider models (<= 3 hours on 2 cores, resumable)")
@click.option("--seed", default=0, show_default=True, help="training seed of both models")
@_user_errors
def demo(out_dir, quick, wide, reference, seed) -> None:
    """The whole method on the embedded corpus (the stdlib and generated programs): data, sparse and dense
    models, tasks, circuits, report."""
    from .demo import DEFAULT, QUICK, REFERENCE, WIDE, run_demo, summary_table

    chosen = [name for name, flag in (("--quick", quick), ("--wide", wide), ("--reference", reference)) if flag]
    if len(chosen) > 1:
        raise UserError(f"demo: {' and '.join(chosen)} are different scales; give one of them")
    scale = QUICK if quick else WIDE if wide else REFERENCE if reference else DEFAULT
    summary = run_demo(out_dir, scale, log=click.echo, seed=seed)
    click.echo("\n" + summary_table(summary))


@main.command()
@click.option("--dense-run", "dense_dir", required=True, type=click.Path(file_okay=False),
              help="the trained dense run to bridge to (frozen)")
@_training_options
@click.option("--bridge-config", "bridge_file", type=click.Path(dir_okay=False),
              help="JSON of bridge options: encoder_topk, nmse_coef, kl_coef, switches_per_step, eval_batches")
@_user_errors
def bridge(dense_dir, data_dir, preset, out_dir, config_file, nonzero_frac, dense, steps, lr, batch_size, seed, device,
           threads, precision, resume, resume_if_exists, bridge_file) -> None:
    """Train a weight-sparse model jointly with bridges to a frozen dense run (same layers, same
    tokenizer): LM loss + NMSE both ways + KL of every hybrid forward (docs/bridges.md)."""
    from .bridges import BridgeConfig, train_bridged
    from .config import dataclass_from_dict
    from .runs import Run

    if dense:
        raise UserError("bridge: the bridged model is the sparse one; --dense does not apply (give --nonzero-frac)")
    dense_cfg = Run(dense_dir).config()
    cfg, resume = _training_config(data_dir, preset, out_dir, config_file, nonzero_frac, False, steps, lr,
                                   batch_size, seed, device, threads, precision, resume, resume_if_exists,
                                   model_defaults={"n_layer": dense_cfg.model.n_layer})
    raw = read_json(bridge_file, "bridge config") if bridge_file else {}
    if not isinstance(raw, dict):
        raise UserError(f"{bridge_file}: must hold a JSON object of bridge options")
    bcfg = dataclass_from_dict(BridgeConfig, raw, bridge_file or "bridge config")
    final = train_bridged(cfg, dense_dir, out_dir, bcfg, resume=resume)
    summary = {k: final[k] for k in ("step", "train_loss", "val_loss") if k in final}
    click.echo(f"bridged {out_dir} to {dense_dir}: " + json.dumps(summary))


@main.command()
@click.option("--model", "run_dir", required=True, type=click.Path(file_okay=False), help="a bridged run")
@click.option("--task", "task_name", required=True)
@click.option("--node", required=True, help="a residual channel of the sparse model, e.g. 1.attn.resid_delta:5")
@click.option("--pairs", "n_pairs", default=32, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="default: RUN_DIR/steering")
@_user_errors
@_task_files
def steer(run_dir, task_name, node, n_pairs, seed, out_dir) -> None:
    """Move one sparse channel from its actual to its counterfactual value, through the bridge
    decoder into the dense model; the dense model's answer probabilities against strength, with a
    random-direction control (JSON + PNG)."""
    from .bridges import BridgedPair
    from .bridges.steer import save_steering
    from .bridges.steer import steer as run_steer
    from .nodes import NodeId

    if n_pairs < 1:
        raise UserError(f"steer: --pairs must be >= 1, got {n_pairs}")
    node_id = NodeId.parse(node)
    pair = BridgedPair.load(run_dir)
    res = run_steer(pair, task_name, node_id, n_pairs, seed)
    stem = save_steering(res, run_dir, out_dir)
    click.echo(f"{task_name}, {node_id} via {res.site}, {res.pairs_used} pairs ({res.pairs_skipped} skipped: "
               "prompts of different lengths)")
    click.echo(f"{'strength':>8} {'P(cf)':>9} {'P(actual)':>9} {'ctrl P(cf)':>10} {'ctrl P(act)':>11}")
    for j, st in enumerate(res.strengths):
        click.echo(f"{st:8.2f} {res.p_counterfactual_answer[j]:9.4f} {res.p_actual_answer[j]:9.4f} "
                   f"{res.control_p_counterfactual_answer[j]:10.4f} {res.control_p_actual_answer[j]:11.4f}")
    click.echo(f"-> {stem}.json, .png")


@main.command("through-bridge")
@click.option("--model", "run_dir", required=True, type=click.Path(file_okay=False), help="a bridged run")
@click.argument("circuit_dir", type=click.Path(file_okay=False))
@click.option("--pairs", "n_pairs", default=64, show_default=True)
@_user_errors
def through_bridge(run_dir, circuit_dir, n_pairs) -> None:
    """How much of the dense model's task behaviour the sparse circuit carries: the dense task loss
    with its residual at each site replaced by dec(sparse residual), whole sparse model vs circuit."""
    from .bridges import BridgedPair
    from .bridges.steer import circuit_through_bridge
    from .circuits.circuit import THROUGH_BRIDGE_FILE, load_circuit
    from .fileio import write_json
    from .runs import Run

    pair = BridgedPair.load(run_dir)
    circuit = load_circuit(circuit_dir)
    if circuit.model_sha256 != Run(run_dir).weights_sha256():
        raise UserError(f"{circuit_dir}: pruned from another model than {run_dir}'s sparse model")
    res = circuit_through_bridge(pair, circuit, n_pairs)
    write_json(Path(circuit_dir) / THROUGH_BRIDGE_FILE, res.as_dict())
    click.echo(f"{res.task}: task loss dense {res.dense_loss:.3f}, sparse {res.sparse_loss:.3f}, "
               f"circuit {res.circuit_loss:.3f}")
    for site, v in res.by_site.items():
        click.echo(f"  dense with dec(sparse) at {site:>12}: whole {v['whole_sparse']:.3f}, circuit {v['circuit']:.3f}")


@main.command("import-openai")
@click.argument("src_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="run directory to write")
@click.option("--tokenizer", "tokenizer_dir", type=click.Path(),
              help="directory with encoder.json + vocab.bpe (tinypython_2k), or a tokenizer.json; "
                   "default: those files in SRC_DIR")
@click.option("--data", "data_dir", type=click.Path(file_okay=False),
              help="data directory encoded with the model's tokenizer (`data --tokenizer`), for means and the report")
@click.option("--force", is_flag=True, help="replace what --out holds (an earlier run is removed)")
@_user_errors
def import_openai_cmd(src_dir, out_dir, tokenizer_dir, data_dir, force) -> None:
    """Open one of OpenAI's released models (beeg_config.json + final_model.pt) as a run directory
    that every command accepts. Weights-only loading: no pickled code runs."""
    from .interop import import_openai

    import_openai(src_dir, out_dir, tokenizer_dir=tokenizer_dir, data_dir=data_dir, log=click.echo, overwrite=force)


@main.command("export-openai")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="directory to write")
@click.option("--force", is_flag=True, help="write over an earlier export in --out")
@_user_errors
def export_openai_cmd(run_dir, out_dir, force) -> None:
    """Write a run's model in the release's format (beeg_config.json, final_model.pt, encoder.json,
    vocab.bpe), to open with their `load_model(dir, flash=True)`."""
    from .interop import export_openai

    export_openai(run_dir, out_dir, log=click.echo, overwrite=force)


@main.command("config")
@click.option("--preset", type=click.Choice([p.value for p in Preset]), default="micro", show_default=True)
def show_config(preset: str) -> None:
    """Print a preset's resolved config (a starting point for --config files)."""
    click.echo(json.dumps(to_dict(resolve_run_config(preset)), indent=2))


if __name__ == "__main__":
    main()
