"""A run directory and its one owner, `Run`: file names, config, tokenizer, weights and their hash,
metrics log, checkpoints, the resume policy, and where circuits, steering results and bridges live.

RUN_DIR/
  config.json            the resolved RunConfig (strictly validated on load)
  tokenizer.json         the tokenizer the model was trained with
  model.safetensors      latest weights; metadata: format, step, hash of the model config
  metrics.jsonl          one JSON object per log / evaluation
  config_history.jsonl   options changed on --resume (RESUMABLE)
  checkpoints/step_N/    model.safetensors, optimizer.safetensors, state.json: a whole
                         checkpoint, written to a temporary directory and renamed, so a killed
                         run always finds a complete one to resume from
  means.safetensors      pretraining means of every node (circuits/means.py)
  task-scores.json       the 20 tasks' scores (tasks/evaluate.py)
  circuits/              `prune-all`'s circuits, one directory per task
  bridges.json, bridges.safetensors, bridge_quality.json, steering/
                         a bridged run's extras (sparse_circuits/bridges, docs/bridges.md)

The formats of the weight and optimizer files are `checkpoint.py`'s; which file is where is this
module's. Every safetensors file carries a digest of its tensors (fileio.CONTENT_DIGEST), checked
on load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .checkpoint import load_module, load_optimizer, load_weights_into, save_optimizer, save_weights
from .config import RunConfig, run_config_from_dict, to_dict
from .data.meta import META_FILE, TOKENIZER_FILE, DataMeta
from .errors import UserError
from .fileio import (
    fsync_path,
    read_json,
    read_safetensors_metadata,
    sha256_file,
    write_json,
    write_safetensors,
    write_text,
)
from .kernels import SPARSE_DENSITY_THRESHOLD, keep_freed_memory
from .model import GPT

WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CHECKPOINT_STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_HISTORY_FILE = "config_history.jsonl"
CHECKPOINTS_DIR = "checkpoints"
CIRCUITS_DIR = "circuits"
MEANS_FILE = "means.safetensors"
TASK_SCORES_FILE = "task-scores.json"
STEERING_DIR = "steering"
BRIDGE_RECORD = "bridges.json"  # a bridged run: bridge config, dense run, digest of its weights
BRIDGE_QUALITY_FILE = "bridge_quality.json"
LOCK_FILE = ".lock"  # held (flock) by the one process that writes the run

# Options a resumed run may change: extending it, a lower learning rate after a divergence, another
# device or thread count. Any other difference from the saved config is refused: the run would no
# longer be one run. Train, sweep and demo all resume by this rule; changes are recorded in
# RUN_DIR/config_history.jsonl.
RESUMABLE = ("train.steps", "train.lr", "train.device", "train.threads", "train.sparse_products_below")


def config_changes(saved: RunConfig, wanted: RunConfig) -> dict[str, tuple]:
    """{"section.key": (saved value, wanted value)} for every config value that differs."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "activation_topk" else {f"{prefix}{k}": v}
        return out

    a, b = flat(to_dict(saved)), flat(to_dict(wanted))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


# A file's SHA-256, kept while its size and modification time stay the same: a run's weights are
# hashed once per process however many circuits, scores and caches check them.
_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


@dataclass(frozen=True)
class Run:
    """A run directory (it need not exist yet: `train` makes it)."""

    dir: Path

    def __post_init__(self):
        object.__setattr__(self, "dir", self.dir.dir if isinstance(self.dir, Run) else Path(self.dir))

    def __str__(self) -> str:
        return str(self.dir)

    # -- where things are ---------------------------------------------------------------------------

    @property
    def weights_path(self) -> Path:
        return self.dir / WEIGHTS_FILE

    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.dir / TOKENIZER_FILE

    @property
    def metrics_path(self) -> Path:
        return self.dir / METRICS_FILE

    @property
    def config_history_path(self) -> Path:
        return self.dir / CONFIG_HISTORY_FILE

    @property
    def checkpoints_root(self) -> Path:
        return self.dir / CHECKPOINTS_DIR

    @property
    def circuits_dir(self) -> Path:
        return self.dir / CIRCUITS_DIR

    @property
    def means_path(self) -> Path:
        return self.dir / MEANS_FILE

    @property
    def task_scores_path(self) -> Path:
        return self.dir / TASK_SCORES_FILE

    @property
    def steering_dir(self) -> Path:
        return self.dir / STEERING_DIR

    @property
    def bridge_record_path(self) -> Path:
        return self.dir / BRIDGE_RECORD

    @property
    def bridge_quality_path(self) -> Path:
        return self.dir / BRIDGE_QUALITY_FILE

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_root / f"step_{step:08d}"

    # -- what it holds --------------------------------------------------------------------------------

    def has_config(self) -> bool:
        return self.config_path.is_file()

    def has_weights(self) -> bool:
        return self.weights_path.is_file()

    def require_weights(self) -> Run:
        if not self.has_weights():
            raise UserError(f"{self.dir}: no {WEIGHTS_FILE}; pass a run directory from `sparse-circuits train`")
        return self

    def config(self) -> RunConfig:
        return run_config_from_dict(read_json(self.config_path, "run config"), where=str(self.config_path))

    def write_config(self, cfg: RunConfig) -> None:
        write_json(self.config_path, to_dict(cfg))

    def tokenizer(self):
        from .data import load_tokenizer
        return load_tokenizer(self.tokenizer_path)

    def weights_sha256(self) -> str:
        """SHA-256 of the weights file: what circuits, scores and caches are tied to."""
        return file_sha256(self.weights_path)

    def load_model(self, device: str = "cpu", step: int | None = None,
                   sparse_threshold: float = SPARSE_DENSITY_THRESHOLD) -> tuple[GPT, RunConfig]:
        """The trained model (or its checkpoint at `step`), in eval mode.

        On the CPU, weights with a nonzero fraction below `sparse_threshold` run as sparse matrices
        (GPT.use_sparse_weights; 0 keeps every product dense). Results equal the dense ones within
        float tolerance."""
        cfg = self.config()
        keep_freed_memory()
        with torch.device("meta"):  # no random init: the weights come from the file (half the peak memory)
            model = GPT(cfg.model)
        path = self.weights_path if step is None else self.checkpoint_dir(step) / WEIGHTS_FILE
        if step is not None and not path.is_file():
            kept = ", ".join(p.name[5:].lstrip("0") for p in self.checkpoint_dirs()) or "none"
            raise UserError(f"{self.dir}: no checkpoint at step {step} (kept: {kept})")
        load_weights_into(model, path, assign=True)
        model = model.to(device).eval()
        model.compute_dtype = cfg.train.precision.dtype  # evaluated, pruned and reported as it was trained
        if torch.device(device).type == "cpu":
            model.use_sparse_weights(sparse_threshold)
        return model, cfg

    # -- the metrics log ------------------------------------------------------------------------------

    def metric_records(self) -> list[dict]:
        """Every readable record of metrics.jsonl, in order ([] when there is none)."""
        return [rec for _, rec in _metric_lines(self.metrics_path)] if self.metrics_path.is_file() else []

    def final_metrics(self) -> dict:
        """The last value of every metric (e.g. of a run that had nothing left to train)."""
        last: dict = {}
        for rec in self.metric_records():
            last |= rec
        return last

    def truncate_metrics(self, last_step: int) -> None:
        """Keep the metrics of steps up to the checkpoint we resume from; drop a torn last line."""
        if not self.metrics_path.is_file():
            return
        kept = [line for line, rec in _metric_lines(self.metrics_path) if rec.get("step", 0) <= last_step]
        write_text(self.metrics_path, "".join(k + "\n" for k in kept))

    def summary(self) -> RunSummary:
        """Final losses, wall time, baselines and per-tensor nonzero fractions (`sparse-circuits info`)."""
        cfg = self.config()
        last = self.final_metrics()
        data_meta = Path(cfg.data_dir) / META_FILE
        baselines = asdict(DataMeta.load(cfg.data_dir).baselines_val_loss) if data_meta.is_file() else {}
        return RunSummary(
            run=str(self.dir), preset=cfg.preset.value,
            shape=f"{cfg.model.n_layer} x {cfg.model.d_model}, d_mlp {cfg.model.d_mlp}, context {cfg.model.context}",
            nonzero_frac_target=cfg.sparsity.nonzero_frac, step=last.get("step"), steps=cfg.train.steps,
            tokens=last.get("tokens"), elapsed_s=last.get("elapsed_s"), train_loss=last.get("train_loss"),
            val_loss=last.get("val_loss"), baselines_val_loss=baselines, nonzero_frac=last.get("nonzero_frac", {}))

    # -- checkpoints and resuming ---------------------------------------------------------------------

    def checkpoint_dirs(self) -> list[Path]:
        root = self.checkpoints_root
        if not root.is_dir():
            return []
        dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
        return sorted(dirs, key=lambda p: int(p.name[5:]))

    def latest_checkpoint_step(self) -> int | None:
        dirs = self.checkpoint_dirs()
        return int(dirs[-1].name[5:]) if dirs else None

    def resume_conflict(self, cfg: RunConfig) -> tuple[str, tuple] | None:
        """The first difference between the saved config and `cfg` that a resumed run may not make
        (RESUMABLE), as (key, (saved, wanted)); None when `cfg` continues this run."""
        changes = config_changes(self.config(), cfg)
        refused = [k for k in changes if k not in RESUMABLE]
        return (refused[0], changes[refused[0]]) if refused else None

    def continues_with(self, cfg: RunConfig, hint: str = "") -> bool:
        """Whether training `cfg` here resumes a run (True) or starts one (False); a run here with
        another config than `cfg` (beyond RESUMABLE) is an error. `hint` says why it might differ."""
        if not self.has_config():
            return False
        conflict = self.resume_conflict(cfg)
        if conflict is not None:
            raise UserError(f"{self.dir}: holds a run with another config ({conflict[0]} differs{hint}); "
                            "use another --out or delete it")
        return True

    def lock(self) -> RunLock:
        """Take the run's write lock (creating the directory), or a one-line error when another process
        holds it. Released by `RunLock.release()` or when the process ends, killed or not."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.dir / LOCK_FILE, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise UserError(f"{self.dir}: another process is writing this run right now (train, bridge or "
                            "resume); wait for it to finish, or use another --out") from None
        return RunLock(f)

    def record_resume(self, changes: dict[str, tuple]) -> None:
        record = {"resumed_at_step": self.latest_checkpoint_step() or 0,
                  "changes": {k: list(v) for k, v in changes.items()}}
        with open(self.config_history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def save_checkpoint(self, model: GPT, opt: torch.optim.Optimizer, names: dict[int, str], state: dict,
                        keep: int = 2, extra: dict[str, torch.nn.Module] | None = None) -> None:
        """Weights, optimizer and loop state in one directory renamed into place; `extra` modules
        trained with the model (bridges) are saved beside it as NAME.safetensors."""
        step = state["step"]
        root = self.checkpoints_root
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".step_*"):  # half-written checkpoints of a killed run
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".step_{step}.", dir=root))
        try:
            save_weights(tmp / WEIGHTS_FILE, model, step)
            save_optimizer(tmp / OPTIMIZER_FILE, opt, names)
            for name, module in (extra or {}).items():
                write_safetensors(tmp / f"{name}.safetensors", module.state_dict())
            write_json(tmp / CHECKPOINT_STATE_FILE, state)
        except BaseException:  # a full disk: leave the earlier checkpoints and nothing half-written
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = self.checkpoint_dir(step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_path(root)
        self._write_final(model, step, extra)
        if keep > 0:
            for old in self.checkpoint_dirs()[:-keep]:
                shutil.rmtree(old)

    def restore_final_weights(self, model: GPT, step: int, extra: dict[str, torch.nn.Module] | None = None) -> bool:
        """Make RUN_DIR/model.safetensors the weights of the checkpoint at `step` (loaded into
        `model`) when it is missing or from another step: a run killed between writing its last
        checkpoint and its final weights leaves them behind. Returns whether it rewrote them."""
        if self.has_weights():
            try:
                if read_safetensors_metadata(self.weights_path, "model weights").get("step") == str(step):
                    return False
            except UserError:
                pass  # damaged: rewritten below
        self._write_final(model, step, extra)
        return True

    def _write_final(self, model: GPT, step: int, extra: dict[str, torch.nn.Module] | None) -> None:
        """RUN_DIR/model.safetensors and the extra modules' files: the run's latest weights."""
        save_weights(self.weights_path, model, step)
        for name, module in (extra or {}).items():
            write_safetensors(self.dir / f"{name}.safetensors", module.state_dict())

    def load_latest_checkpoint(self, model: GPT, opt: torch.optim.Optimizer, names: dict[int, str],
                               extra: dict[str, torch.nn.Module] | None = None) -> dict | None:
        dirs = self.checkpoint_dirs()
        if not dirs:
            return None
        latest = dirs[-1]
        state = read_json(latest / CHECKPOINT_STATE_FILE, "checkpoint state")
        step = load_weights_into(model, latest / WEIGHTS_FILE)
        if step != state.get("step"):
            raise UserError(f"{latest}: weights are from step {step} but state.json says {state.get('step')}; "
                            "delete this checkpoint directory to resume from the previous one")
        for name, module in (extra or {}).items():
            load_module(module, latest / f"{name}.safetensors", name)
        load_optimizer(latest / OPTIMIZER_FILE, opt, names)
        return state


class RunLock:
    def __init__(self, f):
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            import fcntl
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class RunSummary:
    run: str
    preset: str
    shape: str
    nonzero_frac_target: float
    step: int | None  # None: nothing trained yet
    steps: int
    tokens: int | None
    elapsed_s: float | None
    train_loss: float | None
    val_loss: float | None
    baselines_val_loss: dict[str, float | None]  # unigram / bigram (DataMeta.baselines_val_loss); {} without data
    nonzero_frac: dict[str, float]  # per sparsified tensor, at the last evaluation

    def as_dict(self) -> dict:
        return asdict(self)


def _metric_lines(path: Path) -> list[tuple[str, dict]]:
    """(line, record) for every readable line; a torn line (a run killed mid-write) is skipped."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append((line, rec))
    return out


def load_model(run_dir: str | os.PathLike, device: str = "cpu", step: int | None = None,
               sparse_threshold: float = SPARSE_DENSITY_THRESHOLD) -> tuple[GPT, RunConfig]:
    """`Run(run_dir).load_model(...)`, for notebooks and scripts."""
    return Run(run_dir).load_model(device, step, sparse_threshold)
