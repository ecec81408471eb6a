"""Weight-sparse training (SPEC section 3), single process or data-parallel under torchrun.

Each step: sharkfin learning rate -> forward/backward -> clip the gradient's RMS -> AdamW ->
project every sparsified tensor to the annealed nonzero fraction. The dense baseline is the same
loop with nonzero_frac 1 (no projection, no 1/sqrt(frac) factor).

Batches are a pure function of (seed, step), and checkpoints hold the weights and the optimizer
moments, so a killed run resumed from its last checkpoint repeats exactly the steps it would
have taken.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .config import BigramTable, LossReduction, ModelKind, RunConfig
from .data import DataSplit, TokenData
from .data.meta import TOKENIZER_FILE
from .errors import UserError
from .kernels import keep_freed_memory
from .model import GPT
from .runs import RESUMABLE, Run, RunLock, config_changes
from .sparsity import Projector, nonzero_fraction, sharkfin_lr


class TrainingDiverged(UserError):
    """A non-finite training loss. `explained` words the advice for the run it happened in."""

    def __init__(self, loss: float, step: int, message: str | None = None):
        super().__init__(message or f"training loss became {loss} at step {step}")
        self.loss, self.step = loss, step

    def explained(self, out: Path, lr: float, checkpoint_step: int | None) -> "TrainingDiverged":
        where = (f"the last checkpoint (step {checkpoint_step}) in {out} is intact: lower train.lr (now {lr}) and "
                 f"resume with --resume --lr LOWER" if checkpoint_step is not None else
                 f"no checkpoint was written yet: lower train.lr (now {lr}) and start again with --lr LOWER "
                 f"(the same --out is fine)")
        return TrainingDiverged(self.loss, self.step,
                                f"training loss became {self.loss} at step {self.step}; {where}")


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        per = batch_size // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world
        return value


def init_distributed(device: str) -> Distributed:
    """This process's place under torchrun (rank 0 of 1 without it); starts the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())


def build_optimizer(model: GPT, cfg: RunConfig, extra: dict[str, nn.Module] | None = None,
                    lr_mults: dict[str, float] | None = None) -> tuple[torch.optim.AdamW, dict[int, str]]:
    """AdamW; weight decay on sparsified matrices and embeddings only (not biases, gains, sinks, bigram).
    `extra` modules trained with the model (bridges) get one group each, without weight decay and
    at `lr_mults[name]` times the model's learning rate [ours]."""
    sparsified = model.sparsified_parameters()
    decay, no_decay, order = [], [], []
    for name, p in model.named_parameters():
        (decay if name in sparsified and p.dim() >= 2 else no_decay).append(p)
    named = {id(p): n for n, p in model.named_parameters()}
    t = cfg.train
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    for prefix, module in (extra or {}).items():
        groups.append({"params": list(module.parameters()), "weight_decay": 0.0,
                       "lr_mult": (lr_mults or {}).get(prefix, 1.0)})
        named |= {id(p): f"{prefix}.{name}" for name, p in module.named_parameters()}
    opt = torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
    for group in opt.param_groups:
        order.extend(named[id(p)] for p in group["params"])
    return opt, dict(enumerate(order))


def clip_grad_rms_(params: list[torch.nn.Parameter], max_rms: float) -> float:
    """Scale all gradients together so their root-mean-square is at most max_rms; returns the RMS."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    sq = torch.stack([g.pow(2).sum() for g in grads]).sum()
    rms = float(torch.sqrt(sq / sum(g.numel() for g in grads)))
    if rms > max_rms:
        for g in grads:
            g.mul_(max_rms / rms)
    return rms


@torch.no_grad()
def nonzero_fractions(model: GPT) -> dict[str, float]:
    return {n: float(torch.count_nonzero(p)) / p.numel() for n, p in model.sparsified_parameters().items()}


@torch.no_grad()
def evaluate(model: GPT, data: TokenData, cfg: RunConfig) -> float:
    was_training = model.training
    model.eval()
    t = cfg.train
    device = next(model.parameters()).device
    losses = []
    for i in range(t.eval_batches):
        x, y = data.batch(DataSplit.VAL, t.batch_size, cfg.model.context, t.seed, i)
        losses.append(float(model(x.to(device), targets=y.to(device))))
    model.train(was_training)
    return sum(losses) / len(losses)


@dataclass(frozen=True)
class HeldOutLoss:
    """Loss on the whole validation split. Per character (nats/token x the split's tokens /
    characters) it compares models whose tokenizers differ on the same validation files."""

    nats_per_token: float
    nats_per_char: float
    tokens_scored: int


@torch.no_grad()
def full_validation_loss(model: GPT, data: TokenData, context: int, batch_size: int = 64) -> HeldOutLoss:
    """The loss over the whole validation split, in consecutive non-overlapping windows of the
    context length (the `val_loss` of training samples 8 batches)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = torch.from_numpy(np.asarray(data.val, dtype=np.int64))
    n_windows = (tokens.numel() - 1) // context
    if n_windows < 1:
        raise UserError(f"{data.dir}: the validation split has {tokens.numel()} tokens, fewer than the context "
                        f"{context} + 1")
    total = 0.0
    for start in range(0, n_windows, batch_size):
        rows = torch.arange(start, min(n_windows, start + batch_size)) * context
        offsets = rows[:, None] + torch.arange(context + 1)[None, :]
        windows = tokens[offsets].to(device)
        total += float(model(windows[:, :-1], targets=windows[:, 1:])) * windows[:, 1:].numel()
    model.train(was_training)
    per_token = total / (n_windows * context)
    return HeldOutLoss(per_token, per_token * data.meta.tokens.val / data.meta.chars.val,
                       n_windows * context)


# -- the run: checks, directory, resume -----------------------------------------------------------

def check_device(device: str) -> torch.device:
    """The device, if this machine has it; a one-line error otherwise."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"train.device {device!r}: this PyTorch build or machine has no CUDA device; "
                            "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"train.device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
                            "device(s); use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"train.device {device!r}: MPS is not available here; use --device cpu")
    return dev


@dataclass
class RunSetup:
    """Everything checked before anything is written (a failed start leaves no half-made run)."""
    cfg: RunConfig
    run: Run
    data: TokenData
    ddp: Distributed
    device: torch.device
    resume: bool
    changes: dict[str, tuple]  # resumed with these changes to the saved config
    lock: RunLock | None  # the main process's write lock on the run, held until training ends


def setup_run(cfg: RunConfig, out: Path, resume: bool) -> RunSetup:
    """Check the config, data, device and directory; then create or update the run directory."""
    run = Run(out)
    changes: dict[str, tuple] = {}
    if resume:
        if not run.has_config():
            raise UserError(f"{out}: nothing to resume (no config.json); start a run without --resume")
        conflict = run.resume_conflict(cfg)
        if conflict is not None:
            k, (saved, wanted) = conflict
            raise UserError(f"{out}: a resumed run cannot change {k} ({saved!r} -> {wanted!r}); "
                            f"only {', '.join(RESUMABLE)} can change on --resume; start a new run for the rest")
        changes = config_changes(run.config(), cfg)
        done = run.latest_checkpoint_step()
        if done is not None and cfg.train.steps < done:
            raise UserError(f"{out}: train.steps {cfg.train.steps} is below the last checkpoint's step {done}; "
                            "give at least that many steps")
    elif run.config_path.exists() and run.checkpoint_dirs():
        raise UserError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    # (a directory with a config but no checkpoint is a start that failed: it is started over)
    data = TokenData(cfg.data_dir)
    if cfg.model.vocab_size != data.vocab_size:
        raise UserError(f"model.vocab_size {cfg.model.vocab_size} != the tokenizer's {data.vocab_size} "
                        f"in {cfg.data_dir}; leave vocab_size out of the config to take the tokenizer's")
    device = check_device(cfg.train.device)
    ddp = init_distributed(cfg.train.device)
    if cfg.train.batch_size % ddp.world:
        raise UserError(f"train.batch_size {cfg.train.batch_size} must be divisible by the number of "
                        f"processes {ddp.world}")
    lock = None
    if ddp.main:
        lock = run.lock()  # the first write; a second writer of the same run stops here
        if not resume:
            shutil.copyfile(Path(cfg.data_dir) / TOKENIZER_FILE, run.tokenizer_path)
        if not resume or changes:
            run.write_config(cfg)
        if changes:
            run.record_resume(changes)
    if ddp.world > 1:
        dist.barrier()
    return RunSetup(cfg, run, data, ddp, device, resume, changes, lock)


class MetricsLog:
    """metrics.jsonl and the running window of training losses it averages.

    The window may straddle a checkpoint, so its sums are part of the checkpoint's state."""

    def __init__(self, run: Run, main: bool, tokens_per_step: int, world: int, start_step: int,
                 state: dict | None):
        self.path = run.metrics_path
        self.tokens_per_step, self.world = tokens_per_step, world
        self.window_loss = state["window_loss"] if state else 0.0
        self.window_steps = state["window_steps"] if state else 0
        self.elapsed_before = state["elapsed_s"] if state else 0.0
        self.run_start = self.window_start = time.perf_counter()
        self.last: dict = {}
        self.file = None
        if main:
            run.truncate_metrics(start_step)  # drop what came after the checkpoint
            self.file = open(self.path, "a", encoding="utf-8")

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.run_start

    def add(self, loss: float) -> None:
        self.window_loss += loss
        self.window_steps += 1

    def close_window(self, step: int, lr: float, frac: float, grad_rms: float) -> dict:
        seconds = time.perf_counter() - self.window_start
        record = {"step": step, "train_loss": self.window_loss / self.window_steps, "lr": lr,
                  "nonzero_frac_target": frac, "grad_rms": grad_rms,
                  "tokens_per_s": self.window_steps * self.tokens_per_step / seconds,
                  "tokens": step * self.tokens_per_step, "processes": self.world, "elapsed_s": self.elapsed}
        self.window_loss, self.window_steps, self.window_start = 0.0, 0, time.perf_counter()
        return record

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        self.last |= record

    def state(self, step: int) -> dict:
        """What a checkpoint needs to resume this log exactly."""
        return {"step": step, "window_loss": self.window_loss, "window_steps": self.window_steps,
                "elapsed_s": self.elapsed}

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


# -- the loop ---------------------------------------------------------------------------------------

@dataclass
class Trainer:
    """The model, its optimizer and the projection: one `step` is one optimizer step."""
    cfg: RunConfig
    model: GPT
    forward: torch.nn.Module  # the model, wrapped for data-parallel training when there are processes
    opt: torch.optim.AdamW
    names: dict[int, str]
    data: TokenData
    ddp: Distributed
    device: torch.device

    objective: "Objective | None" = None  # trained with the model (bridges); its forward gives the loss

    def __post_init__(self) -> None:
        sp = self.cfg.sparsity
        self.sparsified = list(self.model.sparsified_parameters().values())
        self.projector = Projector(sp.min_per_unit, sp.unit_axis)
        self.model.use_sparse_training_products(self.cfg.train.sparse_products_below)
        self.params = [p for p in self.forward.parameters() if p.requires_grad]
        # [ours] the model's gradient and each extra module's are clipped separately, so that a
        # module's large early gradients cannot shrink the model's share (bridges: by ~100x at first).
        extra = self.objective.extra_modules() if self.objective is not None else {}
        extra_ids = {id(p) for m in extra.values() for p in m.parameters()}
        self.clip_groups = [[p for p in self.params if id(p) not in extra_ids]] + \
            [[p for p in m.parameters() if p.requires_grad] for m in extra.values()]
        # DDP averages gradients over processes, so the per-process mean times the global token count
        # gives the gradient of the loss summed over the whole batch.
        t = self.cfg.train
        self.backward_scale = t.batch_size * self.cfg.model.context if t.loss_reduction == LossReduction.SUM else 1.0

    def step(self, step: int) -> tuple[float, float, float, float]:
        """One optimizer step; returns (loss, lr, nonzero fraction, gradient RMS before clipping)."""
        t, sp = self.cfg.train, self.cfg.sparsity
        frac = nonzero_fraction(sp.nonzero_frac, step, t.steps, sp)
        lr = sharkfin_lr(t.lr, step, t.steps, t.warmup_frac, frac)
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        x, y = self.data.batch(DataSplit.TRAIN, t.batch_size, self.cfg.model.context, t.seed, step,
                               self.ddp.rows(t.batch_size))
        if self.objective is not None:
            self.objective.step_index = step
        loss = self.forward(x.to(self.device), targets=y.to(self.device))
        (loss * self.backward_scale).backward()
        loss_value = float(self.ddp.mean(loss.detach()))
        if not math.isfinite(loss_value):
            raise TrainingDiverged(loss_value, step)
        grad_rms = [clip_grad_rms_(group, t.grad_clip_rms) for group in self.clip_groups][0]
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if sp.kind == ModelKind.SPARSE:
            for p in self.sparsified:
                self.projector(p.data, frac)
        return loss_value, lr, frac, grad_rms


StepCallback = Callable[[int, dict], None]


class Objective(nn.Module):
    """What a later stage trains together with the model (bridges.Bridged): `forward(x, targets)`
    gives the loss; `extra_modules` are trained, checkpointed and saved beside the model as
    NAME.safetensors; `eval_metrics` is logged at every evaluation. The model itself is still
    projected, evaluated and saved as in plain training."""

    step_index: int = 0

    def extra_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def lr_mults(self) -> dict[str, float]:
        """Learning rate of each extra module over the model's."""
        return {}

    def eval_metrics(self, data: TokenData, cfg: RunConfig) -> dict:
        raise NotImplementedError


def train(cfg: RunConfig, out_dir: str | os.PathLike, resume: bool = False,
          on_step: StepCallback | None = None, progress: bool = True,
          couple: Callable[[GPT], Objective] | None = None) -> dict:
    """Train (or resume) the run in out_dir; returns the final metrics.

    On resume, `cfg` may differ from the saved config only in `RESUMABLE` options. `couple`
    builds an `Objective` around the freshly made model (bridges to a dense model)."""
    setup = setup_run(cfg, Path(out_dir), resume)
    cfg, t, ddp, run = setup.cfg, setup.cfg.train, setup.ddp, setup.run
    if t.threads:
        torch.set_num_threads(t.threads)
    keep_freed_memory()
    torch.manual_seed(t.seed)
    bigram = setup.data.bigram_logprobs() if cfg.model.bigram_table != BigramTable.NONE else None
    model = GPT(cfg.model, bigram).to(setup.device)
    model.compute_dtype = t.precision.dtype
    objective = couple(model).to(setup.device) if couple is not None else None
    extra = objective.extra_modules() if objective is not None else {}
    opt, names = build_optimizer(model, cfg, extra, objective.lr_mults() if objective is not None else None)
    state = run.load_latest_checkpoint(model, opt, names, extra) if resume else None
    start = state["step"] if state else 0
    if state is not None and ddp.main:
        run.restore_final_weights(model, start, extra)  # the final weights are always the last checkpoint's
    core = objective if objective is not None else model
    # An objective may leave modules out of a step (bridges: switch points drawn per step).
    forward = torch.nn.parallel.DistributedDataParallel(core, find_unused_parameters=objective is not None) \
        if ddp.world > 1 else core
    trainer = Trainer(cfg, model, forward, opt, names, setup.data, ddp, setup.device, objective)
    log = MetricsLog(run, ddp.main, t.batch_size * cfg.model.context, ddp.world, start, state)
    bar = tqdm(total=t.steps, initial=start, desc="train", unit="step", disable=not (progress and ddp.main),
               mininterval=2.0, dynamic_ncols=True)
    try:
        model.train()
        for step in range(start, t.steps):
            try:
                loss, lr, frac, grad_rms = trainer.step(step)
            except TrainingDiverged as e:
                raise e.explained(run.dir, t.lr, run.latest_checkpoint_step()) from None
            done = step + 1
            log.add(loss)
            record = log.close_window(done, lr, frac, grad_rms) if done % t.log_every == 0 or done == t.steps \
                else None
            if ddp.main and (done % t.eval_every == 0 or done == t.steps):
                record = (record or {"step": done}) | {
                    "val_loss": evaluate(model, setup.data, cfg), "nonzero_frac": nonzero_fractions(model)}
                if objective is not None:
                    record |= objective.eval_metrics(setup.data, cfg)
            if record is not None and ddp.main:
                log.write(record)
                bar.set_postfix(loss=f"{log.last['train_loss']:.3f}" if "train_loss" in log.last else "",
                                val=f"{log.last.get('val_loss', float('nan')):.3f}", refresh=False)
            if ddp.main and (done % t.checkpoint_every == 0 or done == t.steps):
                run.save_checkpoint(model, opt, names, log.state(done), keep=t.keep_checkpoints, extra=extra)
            bar.update(1)
            if on_step is not None:
                on_step(done, record or {})
    finally:
        bar.close()
        log.close()
        if setup.lock is not None:
            setup.lock.release()
        if ddp.world > 1 and dist.is_initialized():
            # Free the DDP reducer before the process group: freed after a peer process has exited
            # (on return from here), gloo's teardown waits for that peer forever.
            trainer = forward = None  # noqa: F841
            dist.destroy_process_group()
    return log.last or run.final_metrics()
