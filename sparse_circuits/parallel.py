"""Several trainings at once, one thread each (the demo's two models, a sweep's grid).

[ours] The small matrix products of CPU-sized models keep two threads poorly busy: on 2 cores,
two single-thread trainings side by side do ~1.3x the work of one two-thread training
(benchmarks/bench_precision.py), while two two-thread trainings at once run ~10x slower. So a CPU
with two or more cores trains independent runs side by side, one thread each, one process each
(`spawn`: nothing of the parent's state leaks in). Each run is an ordinary run directory: its
config records `train.threads: 1`, it checkpoints and resumes as always, and it is bit-for-bit the
run that the same config gives when trained alone.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .config import RunConfig, run_config_from_dict, to_dict
from .errors import UserError


@dataclass(frozen=True)
class TrainJob:
    cfg: RunConfig
    out: Path
    resume: bool


def side_by_side_workers(device: str, jobs: int) -> int:
    """How many trainings to run at once: one per core on a CPU (never more than there are jobs),
    one at a time on an accelerator."""
    if not device.startswith("cpu"):
        return 1
    return max(1, min(jobs, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def one_thread(cfg: RunConfig) -> RunConfig:
    """The config with `train.threads` 1: how a run trains beside others (and is recorded as such)."""
    cfg = run_config_from_dict(to_dict(cfg))
    cfg.train.threads = 1
    return cfg


def _train_child(cfg_dict: dict, out: str, resume: bool) -> dict:
    import torch

    from .train import train

    torch.set_num_threads(1)
    try:
        return {"final": train(run_config_from_dict(cfg_dict), out, resume=resume, progress=False)}
    except UserError as e:  # the message crosses the process boundary; the parent raises it again
        return {"error": str(e)}


def _last_step(out: Path) -> int:
    try:
        with open(out / "metrics.jsonl", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 2048))
            tail = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(tail):
        if line.startswith('{"step": '):
            try:
                return int(line[9:].split(",", 1)[0])
            except ValueError:
                continue
    return 0


def train_side_by_side(jobs: list[TrainJob], workers: int, progress: bool = True,
                       names: list[str] | None = None) -> list[dict]:
    """Train every job, `workers` at a time, one thread each; returns each run's final metrics in
    job order. A failure in one run is raised (as a one-line error naming the run) once the others
    have stopped; what they finished stays on disk and resumes."""
    if workers < 1:
        raise UserError(f"side-by-side training needs >= 1 worker, got {workers}")
    names = names or [str(j.out) for j in jobs]
    results: list[dict | None] = [None] * len(jobs)
    bars = [tqdm(total=j.cfg.train.steps, desc=name, unit="step", position=i, disable=not progress,
                 mininterval=2.0, dynamic_ncols=True) for i, (j, name) in enumerate(zip(jobs, names))]
    errors: list[str] = []
    ctx = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            pending: dict[Future, int] = {
                pool.submit(_train_child, to_dict(one_thread(j.cfg)), str(j.out), j.resume): i
                for i, j in enumerate(jobs)}
            while pending:
                done, _ = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
                for bar, job in zip(bars, jobs):
                    bar.update(_last_step(job.out) - bar.n)
                for future in done:
                    i = pending.pop(future)
                    if future.cancelled():
                        continue
                    out = future.result()
                    if "error" in out:
                        errors.append(f"{names[i]}: {out['error']}")
                    results[i] = out.get("final", {})
                    bars[i].update(jobs[i].cfg.train.steps - bars[i].n)
                if errors:
                    for future in pending:
                        future.cancel()
                    time.sleep(0.1)
    finally:
        for bar in bars:
            bar.close()
    if errors:
        raise UserError(errors[0])
    return [r or {} for r in results]
