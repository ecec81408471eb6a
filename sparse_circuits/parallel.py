"""Independent jobs at once, one thread each: the demo's two trainings and two prunings, a sweep's grid.

[ours] The small matrix products of CPU-sized models keep two threads poorly busy: on 2 cores,
two single-thread trainings side by side do ~1.3x the work of one two-thread training
(benchmarks/bench_precision.py), while two two-thread trainings at once run ~10x slower. So a CPU
with two or more cores runs independent jobs side by side, one thread each, one process each
(`spawn`: nothing of the parent's state leaks in). A training is an ordinary run directory: its
config records `train.threads: 1`, it checkpoints and resumes as always, and it is bit-for-bit the
run that the same config gives when trained alone.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from .config import RunConfig, run_config_from_dict, to_dict
from .errors import UserError


@dataclass(frozen=True)
class TrainJob:
    cfg: RunConfig
    out: Path
    resume: bool


@dataclass(frozen=True)
class Job:
    """One call of a module-level function (it crosses a process boundary) and its name in messages."""

    name: str
    fn: Callable[..., Any]
    kwargs: dict


def side_by_side_workers(device: str, jobs: int) -> int:
    """How many jobs to run at once: one per core on a CPU (never more than there are jobs), one at a
    time on an accelerator."""
    if not device.startswith("cpu"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(jobs, cores))


def one_thread(cfg: RunConfig) -> RunConfig:
    """The config with `train.threads` 1: how a run trains beside others (and is recorded as such)."""
    cfg = run_config_from_dict(to_dict(cfg))
    cfg.train.threads = 1
    return cfg


def _child(fn: Callable[..., Any], kwargs: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    try:
        return {"value": fn(**kwargs)}
    except UserError as e:  # the message crosses the process boundary; the parent raises it again
        return {"error": str(e)}


def prefixed_print(prefix: str, line: str) -> None:
    """A log function for a job (picklable, unlike a lambda): its lines carry the job's name."""
    print(f"{prefix}{line}", flush=True)


def log_for(name: str) -> Callable[[str], None]:
    return functools.partial(prefixed_print, f"[{name}] ")


def side_by_side(jobs: list[Job], workers: int, poll: Callable[[], None] | None = None) -> list[Any]:
    """Run every job, `workers` at a time, one thread each; returns their values in job order. A
    failure in one job is raised (as a one-line error naming the job) once the others have stopped;
    `poll` is called every two seconds meanwhile (progress)."""
    if workers < 1:
        raise UserError(f"side-by-side jobs need >= 1 worker, got {workers}")
    results: list[Any] = [None] * len(jobs)
    errors: list[str] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: dict[Future, int] = {pool.submit(_child, j.fn, j.kwargs): i for i, j in enumerate(jobs)}
        while pending:
            done, _ = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
            if poll is not None:
                poll()
            for future in done:
                i = pending.pop(future)
                if future.cancelled():
                    continue
                out = future.result()
                if "error" in out:
                    errors.append(f"{jobs[i].name}: {out['error']}")
                    for other in pending:
                        other.cancel()
                else:
                    results[i] = out["value"]
    if errors:
        raise UserError(errors[0])
    return results


def _train(cfg: dict, out: str, resume: bool) -> dict:
    from .train import train

    return train(run_config_from_dict(cfg), out, resume=resume, progress=False)


def _last_step(out: Path) -> int:
    """The step of the last record in a run's metrics.jsonl (read from its tail; 0 when there is none)."""
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
    """Train every job side by side, one thread each, with a progress bar per run; returns each
    run's final metrics in job order. What a failed or killed run finished stays on disk and resumes."""
    names = names or [str(j.out) for j in jobs]
    bars = [tqdm(total=j.cfg.train.steps, desc=name, unit="step", position=i, disable=not progress,
                 mininterval=2.0, dynamic_ncols=True) for i, (j, name) in enumerate(zip(jobs, names))]

    def poll() -> None:
        for bar, job in zip(bars, jobs):
            bar.update(_last_step(job.out) - bar.n)

    try:
        return side_by_side([Job(name, _train, {"cfg": to_dict(one_thread(j.cfg)), "out": str(j.out),
                                                "resume": j.resume}) for j, name in zip(jobs, names)],
                            workers, poll)
    finally:
        poll()
        for bar in bars:
            bar.close()
