"""Training throughput: this code against an earlier commit, in one run, with MFU against a measured peak.

    python benchmarks/bench_throughput.py --data runs/data-mix [--baseline 04dacbe] [--repeats 3]
        [--busy] [--equivalence-steps 300] [--out benchmarks/results]

The baseline is the same repository at an earlier commit, checked out into a temporary git
worktree and imported from there in a child process; every measurement (each code, shape and
kind, and the matrix-multiply peak) is its own child process, run one at a time and interleaved
over `--repeats` rounds, so a busy or throttled machine slows both sides alike. Reported: median
tokens/s, the speedup (this code / baseline) per shape and kind, and MFU = model FLOP/s over the
fp32 matrix-multiply peak measured in the same run with the same threads.

--busy   also measures with one other process spinning on a core (a laptop is never idle), for
         1 and 2 threads.
--equivalence-steps N   trains N steps of `micro` with both codes and compares the validation
         loss (the fast paths must not move it by more than 0.01).
Targets (issue 12): >= 1.7x tokens/s at `micro`, >= 1.5x at the larger shape (4 x 256, context
256); MFU goal >= 40%.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The shapes of the comparison: the embedded default, and the largest shape the capability work
# uses (4 layers x 256, context 256).
SHAPES = {
    "micro": {},
    "4x256": {"n_layer": 4, "d_model": 256, "d_mlp": 1024, "context": 256},
    "demo": {"d_model": 64, "d_mlp": 256},  # the demo's model since issue 26, at its batch of 8
}
BATCH = {"demo": 8}  # shapes trained at another batch size than the preset's


# -- child processes ------------------------------------------------------------------------------

def _worker_config(data_dir: str, shape: str, dense: bool, steps: int, threads: int):
    from sparse_circuits.config import resolve_run_config
    meta = json.loads((Path(data_dir) / "meta.json").read_text())  # not DataMeta: the baseline commit may predate it
    return resolve_run_config("micro", {
        "data_dir": data_dir, "model": {"vocab_size": meta["vocab_size"]} | SHAPES[shape],
        "sparsity": {"nonzero_frac": 1.0} if dense else {},
        "train": {"steps": steps, "threads": threads, "eval_every": steps, "checkpoint_every": steps,
                  "log_every": steps} | ({"batch_size": BATCH[shape]} if shape in BATCH else {}),
    })


def worker_steps(data_dir: str, shape: str, dense: bool, steps: int, warmup: int, threads: int) -> dict:
    """Time `steps` optimizer steps (after `warmup`) with whichever sparse_circuits is importable.

    Steps are taken in the middle of the annealing schedule of a 2000-step run (where training
    spends its time), through the same `Trainer.step` the training loop calls."""
    import torch
    from sparse_circuits import train as train_mod
    from sparse_circuits.data import TokenData

    cfg = _worker_config(data_dir, shape, dense, 2000, threads)
    torch.set_num_threads(threads)
    if hasattr(train_mod, "keep_freed_memory"):  # what `train()` does before building the model
        train_mod.keep_freed_memory()
    torch.manual_seed(0)
    data = TokenData(data_dir)
    model = train_mod.GPT(cfg.model, data.bigram_logprobs())
    opt, names = train_mod.build_optimizer(model, cfg)
    trainer = train_mod.Trainer(cfg, model, model, opt, names, data, train_mod.Distributed(),
                                torch.device("cpu"))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        trainer.step(500 + i)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times[warmup:])
    return {"step_s": step_s, "tokens_per_s": cfg.train.batch_size * cfg.model.context / step_s}


def worker_matmul(threads: int, n: int = 1024, reps: int = 20) -> dict:
    """The fp32 matrix-multiply peak: best of `reps` n x n x n products."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(reps + 2):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return {"gflops": 2 * n ** 3 / best / 1e9}


def worker_equivalence(data_dir: str, steps: int, out: str) -> dict:
    from sparse_circuits.train import train
    cfg = _worker_config(data_dir, "micro", False, steps, 2)
    last = train(cfg, Path(out) / "run", progress=False)
    return {"val_loss": last["val_loss"], "train_loss": last["train_loss"]}


# -- the parent -------------------------------------------------------------------------------------

@contextlib.contextmanager
def baseline_checkout(rev: str):
    """The repository at `rev` in a temporary git worktree (removed afterwards)."""
    tmp = Path(tempfile.mkdtemp(prefix="sc-baseline-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tmp / "tree"), rev],
                   check=True, capture_output=True)
    try:
        yield tmp / "tree"
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "tree")],
                       capture_output=True)


def child(code: Path, args: list[str], busy: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        r = subprocess.run([sys.executable, __file__, "--worker", *args], env=env, cwd=str(code),
                           capture_output=True, text=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if r.returncode != 0:
        raise SystemExit(f"benchmark child failed ({' '.join(args)}):\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def flops_per_token(shape: str) -> float:
    """Training FLOPs per token of the dense computation: 6 x matrix parameters (block linears
    and the unembedding) + causal attention 6 x layers x context x d_model (half of the 12 of
    the PaLM paper's count, for the causal mask)."""
    sys.path.insert(0, str(REPO))
    from sparse_circuits.config import resolve_run_config
    from sparse_circuits.model import GPT
    cfg = resolve_run_config("micro", {"model": {"vocab_size": 2048} | SHAPES[shape]})
    model = GPT(cfg.model)
    matrix = sum(m.weight.numel() for name, m in model.named_modules()
                 if name.endswith(("c_q", "c_k", "c_v", "c_proj", "c_fc")) or name == "lm_head")
    m = cfg.model
    return 6 * matrix + 6 * m.n_layer * m.context * m.d_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="data directory from `sparse-circuits data`")
    ap.add_argument("--baseline", default="04dacbe", help="commit to compare against (default: before issue 12)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per measurement (after 3 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--busy", action="store_true")
    ap.add_argument("--equivalence-steps", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "steps":
            data, shape, dense, steps, threads = rest
            res = worker_steps(data, shape, dense == "dense", int(steps), 3, int(threads))
        elif kind == "matmul":
            res = worker_matmul(int(rest[0]))
        else:
            res = worker_equivalence(rest[0], int(rest[1]), rest[2])
        print(json.dumps(res))
        return
    if not args.data:
        ap.error("--data is required")
    data = str(Path(args.data).resolve())
    shapes = args.shapes.split(",")

    rates: dict[tuple, list[float]] = {}
    peaks: list[float] = []
    with baseline_checkout(args.baseline) as old:
        codes = {"baseline": old, "this": REPO}
        for r in range(args.repeats):
            peaks.append(child(REPO, ["matmul", str(args.threads)])["gflops"])
            for shape in shapes:
                for kind in ("sparse", "dense"):
                    for name, code in codes.items():
                        res = child(code, ["steps", data, shape, kind, str(args.steps), str(args.threads)])
                        rates.setdefault((shape, kind, name), []).append(res["tokens_per_s"])
                        print(f"  round {r + 1}: {shape:>6} {kind:>6} {name:>8}: {res['tokens_per_s']:8.0f} tokens/s",
                              flush=True)
        busy = {}
        if args.busy:
            for r in range(args.repeats):
                for threads in (1, 2):
                    for name, code in codes.items():
                        res = child(code, ["steps", data, "micro", "sparse", str(args.steps), str(threads)], busy=True)
                        busy.setdefault(f"{name}_threads{threads}", []).append(res["tokens_per_s"])
                        print(f"  busy core, round {r + 1}: {threads} threads {name:>8}: "
                              f"{res['tokens_per_s']:8.0f} tokens/s", flush=True)
        equivalence = {}
        if args.equivalence_steps:
            for name, code in codes.items():
                with tempfile.TemporaryDirectory() as tmp:
                    equivalence[name] = child(code, ["equivalence", data, str(args.equivalence_steps), tmp])
                print(f"  {args.equivalence_steps} steps, {name}: val_loss {equivalence[name]['val_loss']:.4f}",
                      flush=True)

    peak = statistics.median(peaks)
    rows = []
    print(f"\nfp32 matmul peak (1024^3, {args.threads} threads): median {peak:.0f} GFLOP/s over {len(peaks)} rounds "
          f"({min(peaks):.0f}-{max(peaks):.0f})")
    print(f"{'shape':>6} {'kind':>6} {'baseline tok/s':>15} {'this tok/s':>11} {'speedup':>8} {'MFU base':>9} {'MFU this':>9}")
    for shape in shapes:
        fpt = flops_per_token(shape)
        for kind in ("sparse", "dense"):
            base = statistics.median(rates[(shape, kind, "baseline")])
            this = statistics.median(rates[(shape, kind, "this")])
            row = {"shape": shape, "kind": kind, "baseline_tokens_per_s": base, "tokens_per_s": this,
                   "speedup": this / base, "flops_per_token": fpt,
                   "mfu_baseline": base * fpt / (peak * 1e9), "mfu": this * fpt / (peak * 1e9),
                   "rounds": {"baseline": rates[(shape, kind, "baseline")], "this": rates[(shape, kind, "this")]}}
            rows.append(row)
            print(f"{shape:>6} {kind:>6} {base:>15,.0f} {this:>11,.0f} {row['speedup']:>7.2f}x "
                  f"{row['mfu_baseline']:>8.1%} {row['mfu']:>8.1%}")
    if busy:
        idle = statistics.median(rates[("micro", "sparse", "this")])
        print("\nmicro sparse with one core kept busy by another process (median tokens/s; idle, this code: "
              f"{idle:,.0f})")
        for key, values in busy.items():
            print(f"  {key:>18}: {statistics.median(values):8,.0f}  ({statistics.median(values) / idle:.2f} of idle)")
    if equivalence:
        d = equivalence["this"]["val_loss"] - equivalence["baseline"]["val_loss"]
        print(f"\nvalidation loss after {args.equivalence_steps} steps: baseline "
              f"{equivalence['baseline']['val_loss']:.4f}, this {equivalence['this']['val_loss']:.4f} "
              f"(difference {d:+.4f}; allowed 0.01)")

    sys.path.insert(0, str(REPO))
    from common import machine, write_result  # benchmarks/ (this script's directory)
    baseline_sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.baseline], capture_output=True,
                                  text=True).stdout.strip()
    this_sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "sparse_circuits"],
                                capture_output=True, text=True).stdout.strip())
    result = {"machine": machine(args.threads),
              "baseline": baseline_sha, "this": this_sha + ("+uncommitted" if dirty else ""),
              "threads": args.threads, "steps_per_measurement": args.steps, "repeats": args.repeats,
              "matmul_peak_gflops": peak, "matmul_peaks": peaks, "throughput": rows,
              "busy_core": {k: statistics.median(v) for k, v in busy.items()},
              "busy_core_rounds": busy, "equivalence": equivalence}
    write_result(Path(args.out) / "throughput.json", result)


if __name__ == "__main__":
    main()
