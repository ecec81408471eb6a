"""Training benchmark: sparse vs dense throughput, weight projection vs the naive method, peak memory.

    python benchmarks/bench_training.py --data runs/data-stdlib [--preset micro] [--out benchmarks/results]

Every comparison is a ratio measured in one run on one machine, so a busy machine skews both
sides alike. Prints a table per part and writes benchmarks/results/training.json.
Targets (issue 2): sparse step time <= 1.15x dense at `micro`; projection >= 5x faster than the
naive method on matrices of 1M entries or more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sparse_circuits.config import resolve_run_config, to_dict
from sparse_circuits.data import DataMeta
from sparse_circuits.sparsity import Projector
from sparse_circuits.train import train

from baselines import project_naive_  # benchmarks/ (this script's directory)
from common import machine, write_result


def run_config(data_dir: str, preset: str, dense: bool, steps: int):
    return resolve_run_config(preset, {
        "data_dir": data_dir, "model": {"vocab_size": DataMeta.load(data_dir).vocab_size},
        "sparsity": {"nonzero_frac": 1.0} if dense else {},
        "train": {"steps": steps, "log_every": 10, "eval_every": steps, "checkpoint_every": steps,
                  "eval_batches": 1},
    })


def throughput(data_dir: str, preset: str, steps: int, repeats: int) -> dict:
    """Median tokens/s over log windows (the first, warm-up window dropped), sparse and dense alternated."""
    rates: dict[str, list[float]] = {"sparse": [], "dense": []}
    for _ in range(repeats):
        for kind in ("sparse", "dense"):
            with tempfile.TemporaryDirectory() as tmp:
                train(run_config(data_dir, preset, kind == "dense", steps), Path(tmp) / "run", progress=False)
                recs = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
            rates[kind] += [r["tokens_per_s"] for r in recs if "tokens_per_s" in r][1:]
    sparse, dense = statistics.median(rates["sparse"]), statistics.median(rates["dense"])
    return {"preset": preset, "sparse_tokens_per_s": sparse, "dense_tokens_per_s": dense,
            "sparse_step_time_over_dense": dense / sparse, "target": 1.15}


def projection(sizes: list[int], frac: float, repeats: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        w = torch.randn(n, n, generator=g)
        times = {"fast": [], "naive": []}
        x = torch.empty_like(w)
        projector = Projector(min_per_unit=4)  # as in training: one per run, reused every step
        for _ in range(repeats + 1):
            for kind, fn in (("fast", projector), ("naive", lambda t, f: project_naive_(t, f, 4))):
                x.copy_(w)
                t0 = time.perf_counter()
                fn(x, frac)
                times[kind].append(time.perf_counter() - t0)
        times = {kind: ts[1:] for kind, ts in times.items()}  # the first call allocates the scratch buffer
        fast, naive = statistics.median(times["fast"]), statistics.median(times["naive"])
        rows.append({"shape": [n, n], "entries": n * n, "frac": frac, "fast_ms": fast * 1e3, "naive_ms": naive * 1e3,
                     "speedup": naive / fast})
    return rows


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure_memory(data_dir: str, preset: str, dense: bool) -> None:
    """Child process: peak resident memory while training, and the resident memory before it.

    getrusage's ru_maxrss survives fork and exec (it would report the parent's peak), so we
    read the kernel's high-water mark VmHWM, reset just before training through clear_refs.
    """
    cfg = run_config(data_dir, preset, dense, 10)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mb("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", progress=False)
    print(json.dumps({"peak_rss_mb": _status_mb("VmHWM"), "rss_before_mb": before}))


def memory(data_dir: str, preset: str) -> dict:
    out = {}
    for kind in ("sparse", "dense"):
        r = subprocess.run([sys.executable, __file__, "--data", data_dir, "--preset", preset,
                            "--measure-memory", kind], capture_output=True, text=True, check=True)
        out[kind] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="data directory from `sparse-circuits data`")
    ap.add_argument("--preset", default="micro")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sizes", default="64,256,1024,2048,4096")
    ap.add_argument("--frac", type=float, default=1 / 16)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--measure-memory", choices=["sparse", "dense"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_memory:
        _measure_memory(args.data, args.preset, args.measure_memory == "dense")
        return

    tp = throughput(args.data, args.preset, args.steps, args.repeats)
    print(f"\n1. training throughput at `{args.preset}` (median tokens/s)")
    print(f"   sparse {tp['sparse_tokens_per_s']:,.0f}   dense {tp['dense_tokens_per_s']:,.0f}   "
          f"sparse step time / dense = {tp['sparse_step_time_over_dense']:.3f}  (target <= 1.15)")

    proj = projection([int(s) for s in args.sizes.split(",")], args.frac, repeats=5)
    print(f"\n2. weight projection, nonzero fraction {args.frac:g}, j = 4 (median ms)")
    print(f"   {'shape':>11} {'entries':>10} {'ours':>9} {'naive':>9} {'speedup':>8}")
    for r in proj:
        print(f"   {r['shape'][0]:>5}x{r['shape'][1]:<5} {r['entries']:>10,} {r['fast_ms']:>9.2f} "
              f"{r['naive_ms']:>9.2f} {r['speedup']:>7.1f}x")

    mem = memory(args.data, args.preset)
    print(f"\n3. peak resident memory while training at `{args.preset}` (MB, whole process, Linux)")
    for kind, m in mem.items():
        print(f"   {kind:>6}: peak {m['peak_rss_mb']:.0f}  (before training {m['rss_before_mb']:.0f})")

    result = {"machine": machine(),
              "config": to_dict(run_config(args.data, args.preset, False, args.steps)),
              "throughput": tp, "projection": proj, "memory": mem}
    write_result(Path(args.out) / "training.json", result)


if __name__ == "__main__":
    main()
