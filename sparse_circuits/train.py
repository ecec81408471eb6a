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
from tqdm import tqdm

from .checkpoint import (
    checkpoint_dirs,
    load_latest_checkpoint,
    load_run_config,
    save_checkpoint,
    write_run_config,
)
from .config import BigramTable, LossReduction, RunConfig
from .data import TokenData
from .errors import UserError
from .fileio import write_text
from .model import GPT, lm_loss
from .sparsity import Projector, nonzero_fraction, sharkfin_lr


class TrainingDiverged(UserError):
    pass


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


def _init_distributed(device: str) -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())


def build_optimizer(model: GPT, cfg: RunConfig) -> tuple[torch.optim.AdamW, dict[int, str]]:
    """AdamW; weight decay on sparsified matrices and embeddings only (not biases, gains, sinks, bigram)."""
    sparsified = model.sparsified_parameters()
    decay, no_decay, order = [], [], []
    for name, p in model.named_parameters():
        (decay if name in sparsified and p.dim() >= 2 else no_decay).append(p)
    named = {id(p): n for n, p in model.named_parameters()}
    t = cfg.train
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps,
    )
    for group in opt.param_groups:
        order.extend(named[id(p)] for p in group["params"])
    return opt, dict(enumerate(order))


def clip_grad_rms_(params: list[torch.nn.Parameter], max_rms: float) -> float:
    """Scale all gradients together so their root-mean-square is at most max_rms; returns the RMS."""
    grads = [p.grad for p in params if p.grad is not None]
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
        x, y = data.batch("val", t.batch_size, cfg.model.context, t.seed, i)
        losses.append(float(lm_loss(model(x.to(device)), y.to(device))))
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
        logits = model(windows[:, :-1])
        total += float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), windows[:, 1:].reshape(-1), reduction="sum"))
    model.train(was_training)
    per_token = total / (n_windows * context)
    return HeldOutLoss(per_token, per_token * data.meta["tokens"]["val"] / data.meta["chars"]["val"],
                       n_windows * context)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the metrics of steps up to the checkpoint we resume from; drop a torn last line."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step", 0) <= last_step:
            kept.append(line)
    write_text(path, "".join(k + "\n" for k in kept))


def prepare_run_dir(cfg: RunConfig, out: Path, resume: bool) -> RunConfig:
    """Create the run directory, or check that resuming it is possible; returns the config to use."""
    if resume:
        if not (out / "config.json").is_file():
            raise UserError(f"{out}: nothing to resume (no config.json); start a run without --resume")
        return load_run_config(out)
    if (out / "config.json").exists() or checkpoint_dirs(out):
        raise UserError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, cfg)
    shutil.copyfile(Path(cfg.data_dir) / "tokenizer.json", out / "tokenizer.json")
    return cfg


StepCallback = Callable[[int, dict], None]


def train(cfg: RunConfig, out_dir: str | os.PathLike, resume: bool = False,
          on_step: StepCallback | None = None, progress: bool = True) -> dict:
    """Train (or resume) the run in out_dir; returns the final metrics."""
    out = Path(out_dir)
    ddp = _init_distributed(cfg.train.device)
    data = TokenData(cfg.data_dir)
    if cfg.model.vocab_size != data.vocab_size:
        raise UserError(f"model.vocab_size {cfg.model.vocab_size} != the tokenizer's {data.vocab_size} "
                        f"in {cfg.data_dir}; leave vocab_size out of the config to take the tokenizer's")
    if cfg.train.batch_size % ddp.world:
        raise UserError(f"train.batch_size {cfg.train.batch_size} must be divisible by the number of "
                        f"processes {ddp.world}")
    if ddp.main:
        cfg = prepare_run_dir(cfg, out, resume)
    if ddp.world > 1:
        dist.barrier()
        cfg = load_run_config(out)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t, sp = cfg.train, cfg.sparsity
    device = torch.device(t.device)

    torch.manual_seed(t.seed)
    bigram = data.bigram_logprobs() if cfg.model.bigram_table != BigramTable.NONE else None
    model = GPT(cfg.model, bigram).to(device)
    opt, names = build_optimizer(model, cfg)
    start, window_loss, window_steps, elapsed_before = 0, 0.0, 0, 0.0
    if resume:
        state = load_latest_checkpoint(out, model, opt, names)
        if state is not None:
            # The logged train loss averages a window that may straddle the checkpoint.
            start, window_loss, window_steps = state["step"], state["window_loss"], state["window_steps"]
            elapsed_before = state["elapsed_s"]
    if ddp.main:
        _truncate_metrics(out / "metrics.jsonl", start)
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model
    sparsified = list(model.sparsified_parameters().values())
    projector = Projector(sp.min_per_unit, sp.unit_axis)
    params = list(model.parameters())
    tokens_per_step = t.batch_size * cfg.model.context
    # DDP averages gradients over processes, so the per-process mean times the global token count
    # gives the gradient of the loss summed over the whole batch.
    backward_scale = tokens_per_step if t.loss_reduction == LossReduction.SUM else 1.0

    metrics_file = open(out / "metrics.jsonl", "a", encoding="utf-8") if ddp.main else None
    bar = tqdm(total=t.steps, initial=start, desc="train", unit="step", disable=not (progress and ddp.main),
               mininterval=2.0, dynamic_ncols=True)
    last: dict = {}
    run_start = window_start = time.perf_counter()
    try:
        model.train()
        for step in range(start, t.steps):
            frac = nonzero_fraction(sp.nonzero_frac, step, t.steps, sp)
            lr = sharkfin_lr(t.lr, step, t.steps, t.warmup_frac, frac)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = data.batch("train", t.batch_size, cfg.model.context, t.seed, step, ddp.rows(t.batch_size))
            loss = lm_loss(ddp_model(x.to(device)), y.to(device))
            (loss * backward_scale).backward()
            loss_value = float(ddp.mean(loss.detach()))
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"training loss became {loss_value} at step {step}; the last checkpoint in {out} is "
                    f"intact: lower train.lr (now {t.lr}) and resume with --resume, or start over")
            grad_rms = clip_grad_rms_(params, t.grad_clip_rms)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if not sp.dense:
                for p in sparsified:
                    projector(p.data, frac)

            done = step + 1
            window_loss += loss_value
            window_steps += 1
            record = None
            if done % t.log_every == 0 or done == t.steps:
                elapsed = time.perf_counter() - window_start
                record = {"step": done, "train_loss": window_loss / window_steps, "lr": lr,
                          "nonzero_frac_target": frac, "grad_rms": grad_rms,
                          "tokens_per_s": window_steps * tokens_per_step / elapsed, "tokens": done * tokens_per_step,
                          "processes": ddp.world, "elapsed_s": elapsed_before + time.perf_counter() - run_start}
                window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
            if ddp.main and (done % t.eval_every == 0 or done == t.steps):
                record = (record or {"step": done}) | {
                    "val_loss": evaluate(model, data, cfg), "nonzero_frac": nonzero_fractions(model)}
            if record is not None and metrics_file is not None:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                last |= record
                bar.set_postfix(loss=f"{last['train_loss']:.3f}" if "train_loss" in last else "",
                                val=f"{last.get('val_loss', float('nan')):.3f}", refresh=False)
            if ddp.main and (done % t.checkpoint_every == 0 or done == t.steps):
                save_checkpoint(out, model, opt, names, {"step": done, "window_loss": window_loss,
                                                         "window_steps": window_steps,
                                                         "elapsed_s": elapsed_before + time.perf_counter() - run_start},
                                keep=t.keep_checkpoints)
            bar.update(1)
            if on_step is not None:
                on_step(done, record or {})
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if ddp.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return last or final_metrics(out)


def final_metrics(run_dir: str | os.PathLike) -> dict:
    """The last values of every metric of a run (e.g. of one that had nothing left to train)."""
    last: dict = {}
    path = Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            last |= json.loads(line)
    return last


def summarize_run(run_dir: str | os.PathLike) -> dict:
    """Final losses, wall time, baselines and per-tensor nonzero fractions of a run directory."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    last = final_metrics(run_dir)
    meta_path = Path(cfg.data_dir) / "meta.json"
    baselines = json.loads(meta_path.read_text())["baselines_val_loss"] if meta_path.is_file() else {}
    return {
        "run": str(run_dir), "preset": cfg.preset.value,
        "shape": f"{cfg.model.n_layer} x {cfg.model.d_model}, d_mlp {cfg.model.d_mlp}, context {cfg.model.context}",
        "nonzero_frac_target": cfg.sparsity.nonzero_frac, "step": last.get("step"), "steps": cfg.train.steps,
        "tokens": last.get("tokens"), "elapsed_s": last.get("elapsed_s"), "train_loss": last.get("train_loss"),
        "val_loss": last.get("val_loss"), "baselines_val_loss": baselines,
        "nonzero_frac": last.get("nonzero_frac", {}),
    }
